// The dashboard: one public WebSocket (/ws/public) feeds the market tab; the team and operator
// tabs add their own (team key) and REST calls (admin key). No page reloads, no build step.
import { MarketChart } from './charts.js';
import { el } from './format.js';
import {
  renderChain, renderClock, renderDepth, renderHealth, renderLeaderboard, renderNews,
  renderStatus, renderTape,
} from './tables.js';
import { TeamView } from './team.js';
import { OperatorView } from './operator.js';

const $ = (id) => document.getElementById(id);
const TAPE_KEPT = 300;
const NEWS_KEPT = 100;

const state = {
  instruments: [], quotes: {}, fair: {}, spots: {}, status: { phase: '', halted: [], expired: [] },
  leaderboard: [], tape: [], news: [], selected: 'SPX_4500_CALL', chainUnderlying: 'SPX',
};
const chart = new MarketChart($('chart'), $('regime-legend'));
const team = new TeamView();
const operator = new OperatorView(state);
let socket = null;
let retry = 500;

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  socket = new WebSocket(`${scheme}://${location.host}/ws/public`);
  socket.onopen = () => {
    retry = 500;
    $('link').className = 'link up';
    $('link').textContent = 'live';
  };
  socket.onmessage = (event) => handle(JSON.parse(event.data));
  socket.onclose = () => {
    $('link').className = 'link down';
    $('link').textContent = 'reconnecting';
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 5000);
  };
}

function watch() {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: 'watch', instrument_id: state.selected }));
  }
}

function handle(message) {
  const { type, data } = message;
  if (type === 'snapshot') snapshot(data);
  else if (type === 'update') update(data);
  else if (type === 'depth' && data.instrument_id === state.selected) renderDepth(data, state);
}

function snapshot(data) {
  Object.assign(state, {
    instruments: data.instruments, quotes: data.quotes, fair: data.fair, spots: data.spots,
    status: data.status, leaderboard: data.leaderboard, tape: data.tape, news: data.news,
  });
  if (!state.instruments.some((i) => i.id === state.selected) && state.instruments.length) {
    state.selected = state.instruments[0].id;
  }
  fillInstrumentSelect();
  chart.reset(data.underlying, data.news, data.regimes, data.regime_names);
  renderStatus(state.status);
  renderClock(data.clock);
  renderHealth(data.health);
  renderLeaderboard(state.leaderboard);
  renderChain(state);
  renderTape(state);
  renderNews(state.news);
  operator.refresh();
  watch();
}

function update(data) {
  let chain = false;
  if (data.status) {
    state.status = data.status;
    renderStatus(state.status);
    operator.refresh();
    chain = true;
  }
  if (data.underlying) {
    for (const [symbol, points] of Object.entries(data.underlying)) chart.addPoints(symbol, points);
  }
  if (data.spots) Object.assign(state.spots, data.spots);
  if (data.regimes) chart.setRegimes(data.regimes);
  if (data.clock) renderClock(data.clock);
  if (data.health) renderHealth(data.health);
  if (data.fair) { Object.assign(state.fair, data.fair); chain = true; }
  if (data.quotes) { Object.assign(state.quotes, data.quotes); chain = true; }
  if (data.leaderboard) {
    state.leaderboard = data.leaderboard;
    renderLeaderboard(state.leaderboard);
    operator.teams(state.leaderboard);
  }
  if (data.trades) {
    state.tape = state.tape.concat(data.trades).slice(-TAPE_KEPT);
    renderTape(state, new Set(data.trades.map((t) => t.trade_id)));
  }
  if (data.news) {
    state.news = state.news.concat(data.news).slice(-NEWS_KEPT);
    chart.addNews(data.news);
    renderNews(state.news);
  }
  if (chain) renderChain(state);
}

function fillInstrumentSelect() {
  const select = $('instrument');
  select.replaceChildren(...state.instruments.map((i) => el('option', { value: i.id, text: i.id })));
  select.value = state.selected;
  const symbols = [...new Set(state.instruments.map((i) => i.underlying))];
  $('chain-underlying').replaceChildren(...symbols.map((s) => el('button', {
    text: s, class: s === state.chainUnderlying ? 'active' : '',
    onclick: () => { state.chainUnderlying = s; fillInstrumentSelect(); renderChain(state); },
  })));
}

function select(iid) {
  state.selected = iid;
  $('instrument').value = iid;
  renderChain(state);
  renderTape(state);
  watch();
}

function showTab(name) {
  for (const button of document.querySelectorAll('nav button')) {
    button.classList.toggle('active', button.dataset.tab === name);
  }
  for (const tab of document.querySelectorAll('main.tab')) tab.hidden = tab.id !== name;
}

$('instrument').addEventListener('change', (e) => select(e.target.value));
$('chain').addEventListener('click', (e) => {
  const iid = e.target.closest('td')?.dataset.iid;
  if (iid) select(iid);
});
$('tape-all').addEventListener('change', () => renderTape(state));
for (const button of document.querySelectorAll('nav button')) {
  button.addEventListener('click', () => showTab(button.dataset.tab));
}
team.restore();
operator.restore();
connect();
