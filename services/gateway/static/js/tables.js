// The market tab's tables and the header: leaderboard, option chain, depth, tape, news, status.
import {
  el, replaceRows, price, signed, signClass, qty, compact, gameClock, wallTime, roleName,
} from './format.js';

const $ = (id) => document.getElementById(id);
const ROLE_TAGS = { market_maker: 'MM', hedge_fund: 'HF', arbitrage: 'ARB', retail: 'RTL' };
const AGGRESSOR = { buy: ['▲', 'pos'], sell: ['▼', 'neg'], auction: ['◆', 'dim'] };  // the taker's side

export function renderStatus(status) {
  const phase = $('phase');
  phase.textContent = status.phase.replace('_', ' ');
  phase.className = 'badge ' + status.phase;
  const halted = $('halted');
  const { expired } = status;
  halted.hidden = !status.halted.length && !expired.length;
  halted.textContent = [status.halted.length ? 'halted: ' + status.halted.join(', ') : '',
    expired.length ? 'options expired' : ''].filter(Boolean).join('; ');
}

// No order reaches the book: halted by the operator, or an option past its expiry.
const closed = (state, iid) => state.status.halted.includes(iid)
  || state.status.expired.includes(iid);

export function renderClock(clock) {
  const speed = clock.speed === null || clock.speed === undefined ? ''
    : clock.speed === 0 ? ' · paused' : ` · ×${clock.speed}`;
  $('clock').replaceChildren('game ', el('b', { text: gameClock(clock.game_s) }),
    ` · tick ${clock.tick}${speed}`);
}

export function renderHealth(health) {
  const dots = Object.entries(health.services || {}).map(([name, s]) => el('span', {
    class: 'dot' + (s.alive ? ' ok' : ''), text: name,
    title: s.last_heartbeat_s !== undefined ? `last heartbeat ${s.last_heartbeat_s} s ago` : '',
  }));
  $('health').replaceChildren(...dots);
}

// Options net / gross contracts, then each underlying: one nowrap span per part.
function positionParts(p) {
  const parts = [];
  if (p.options_gross) parts.push(`opt ${qty(p.options_net)}/${p.options_gross}`);
  for (const [symbol, n] of Object.entries(p.underlyings)) parts.push(`${symbol} ${qty(n)}`);
  return (parts.length ? parts : ['flat']).map((text) => el('span', { text }));
}

function figureText(row) {
  const f = row.figures;
  const deltas = Object.entries(f.delta).map(([u, d]) => `${u} ${qty(Math.round(d))}`);
  switch (row.role) {
    case 'market_maker':
      return `quoted ${(f.quoted_share * 100).toFixed(0)}% · edge ${signed(f.edge)}`;
    case 'hedge_fund':
      return 'Δ ' + (deltas.join(' · ') || '0');
    case 'arbitrage': {
      const usd = Object.entries(f.delta_usd).map(([u, v]) => `${u} ${compact(v)}`);
      return `$Δ ${usd.join(' / ') || '0'} · net ${compact(f.net_delta_usd)}`;
    }
    default:
      return '';
  }
}

export function renderLeaderboard(rows) {
  const body = $('leaderboard').tBodies[0];
  replaceRows(body, rows.map((r) => el('tr', {
    class: r.rank === null ? 'house' : '', dataset: { team: r.team_id },
    title: r.unmarked.length ? `no mark yet: ${r.unmarked.join(', ')}` : '',
  },
  el('td', { text: r.rank === null ? '' : r.rank }),
  el('td', { title: `${r.team_id} · ${roleName(r.role)}` }, r.team_name,
    el('span', { class: `role ${r.role}`, text: ROLE_TAGS[r.role] || r.role }),
    el('div', { class: 'figure', text: figureText(r) })),
  el('td', { class: 'num pnl ' + signClass(r.pnl), text: signed(r.pnl) }),
  el('td', { class: 'num ' + signClass(r.fees), text: signed(r.fees) }),
  el('td', { class: 'positions', title: 'options net/gross contracts, underlyings' },
    ...positionParts(r.positions)))));
}

function quoteCell(q, side, iid, state) {
  const value = side === 'bid' ? q?.bid : q?.ask;
  const size = side === 'bid' ? q?.bid_size : q?.ask_size;
  const td = el('td', { class: 'num', dataset: { iid } }, price(value));
  if (value !== null && value !== undefined) td.append(el('sub', { text: `×${size}` }));
  if (closed(state, iid)) td.classList.add('halted');
  if (state.selected === iid) td.classList.add('sel');
  return td;
}

function optionCells(iid, state, order) {
  const q = state.quotes[iid];
  const fair = state.fair[iid];
  const cells = {
    fair: el('td', { class: 'num dim', dataset: { iid }, text: price(fair?.fair) }),
    last: el('td', { class: 'num', dataset: { iid }, text: price(q?.last) }),
    bid: quoteCell(q, 'bid', iid, state),
    ask: quoteCell(q, 'ask', iid, state),
  };
  return order.map((k) => cells[k]);
}

export function renderChain(state) {
  const body = $('chain').tBodies[0];
  const symbol = state.chainUnderlying;
  const options = state.instruments.filter((i) => i.kind === 'option' && i.underlying === symbol);
  const strikes = [...new Set(options.map((i) => Number(i.strike)))].sort((a, b) => a - b);
  const spot = state.spots[symbol];
  const under = state.quotes[symbol];
  const rows = [el('tr', { class: 'underlying' },
    el('td', { class: 'num dim', text: price(spot) }),
    el('td', { class: 'num', dataset: { iid: symbol }, text: price(under?.last) }),
    quoteCell(under, 'bid', symbol, state), quoteCell(under, 'ask', symbol, state),
    el('td', { class: 'strike', dataset: { iid: symbol }, text: symbol }),
    el('td', { colspan: 4, class: 'dim', text: '← the underlying itself' }))];
  for (const strike of strikes) {
    const call = options.find((i) => Number(i.strike) === strike && i.option_type === 'call');
    const put = options.find((i) => Number(i.strike) === strike && i.option_type === 'put');
    rows.push(el('tr', {},
      ...(call ? optionCells(call.id, state, ['fair', 'last', 'bid', 'ask']) : []),
      el('td', { class: 'strike', text: strike.toFixed(0) }),
      ...(put ? optionCells(put.id, state, ['bid', 'ask', 'last', 'fair']) : [])));
  }
  replaceRows(body, rows);
}

export function renderDepth(depth, state) {
  const levels = [...depth.asks.slice().reverse().map((l) => ['ask', l]),
    ['mid', null], ...depth.bids.map((l) => ['bid', l])];
  const most = Math.max(1, ...depth.asks.map((l) => l[1]), ...depth.bids.map((l) => l[1]));
  const q = depth.quote;
  const spread = q.bid !== null && q.ask !== null ? (q.ask - q.bid).toFixed(2) : '–';
  const rows = levels.map(([side, level]) => {
    if (side === 'mid') {
      return el('tr', { class: 'mid' }, el('td', { colspan: 3,
        text: `spread ${spread} · last ${price(q.last)}` }));
    }
    const bar = el('span');
    bar.style.width = `${(100 * level[1]) / most}%`;
    return el('tr', { class: side }, el('td', { class: 'bar' }, bar),
      el('td', { class: 'num price', text: price(level[0]) }),
      el('td', { class: 'num', text: level[1] }));
  });
  replaceRows($('depth').tBodies[0], rows);
  const fair = state.fair[depth.instrument_id]?.fair ?? state.spots[depth.instrument_id];
  const expired = state.status.expired.includes(depth.instrument_id);
  $('quote').replaceChildren(
    el('span', {}, 'fair ', el('b', { text: price(fair) })),
    el('span', {}, 'last ', el('b', { text: price(q.last) })),
    closed(state, depth.instrument_id)
      ? el('span', { class: 'badge halted', text: expired ? 'expired' : 'halted' }) : '');
}

function tradeRow(t, fresh) {
  return el('tr', { class: fresh ? 'flash' : '', dataset: { trade: t.trade_id, iid: t.instrument_id } },
    el('td', { class: 'dim', text: wallTime(t.time) }),
    el('td', { text: t.instrument_id }),
    el('td', { class: 'num', text: price(t.price) }),
    el('td', { class: 'num', text: t.quantity }),
    el('td', { class: AGGRESSOR[t.aggressor]?.[1] || 'dim', title: `aggressor: ${t.aggressor}`,
      text: AGGRESSOR[t.aggressor]?.[0] || t.aggressor }));
}

export function renderTape(state, fresh = new Set()) {
  const all = $('tape-all').checked;
  const trades = all ? state.tape : state.tape.filter((t) => t.instrument_id === state.selected);
  const newest = trades.slice(-80).reverse();
  replaceRows($('tape').tBodies[0], newest.map((t) => tradeRow(t, fresh.has(t.trade_id))));
}

export function renderNews(news) {
  const items = news.slice().reverse().map((n) => el('li', { dataset: { news: n.news_id } },
    el('div', {},
      el('span', { class: n.direction, text: n.direction === 'up' ? '▲ ' : n.direction === 'down' ? '▼ ' : '● ' }),
      el('b', { text: `#${n.news_id} ` }), n.headline,
      n.injected ? el('span', { class: 'tag', text: 'game master' }) : null),
    el('div', { class: 'meta', text: `game ${gameClock(n.game_s)} · ${n.direction}`
      + (n.jump ? ` · jump ${(n.magnitude * 100).toFixed(1)}%` : '') })));
  $('news').replaceChildren(...items);
}
