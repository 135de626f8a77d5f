// A team's own view behind its API key: holdings, open orders, fills, P&L over time.
// The key goes in the first frame of /ws/team (never in a URL) and stays in this tab only.
import { PnlChart } from './charts.js';
import { el, replaceRows, price, signed, signClass, qty, wallTime, roleName } from './format.js';

const $ = (id) => document.getElementById(id);
const STORE = 'itg.teamKey';
const FILLS = 200;  // fills kept, as many as the gateway keeps (scores.FILLS)

export class TeamView {
  constructor() {
    this.socket = null;
    this.key = null; // the key being used: kept across reconnections until logout or a 1008
    this.retryMs = 0;
    this.chart = new PnlChart($('pnl-chart'));
    $('team-login').addEventListener('submit', (e) => {
      e.preventDefault();
      this.open(e.target.elements.key.value.trim());
    });
    $('team-logout').addEventListener('click', () => this.close());
  }

  restore() {
    const key = sessionStorage.getItem(STORE);
    if (key) this.open(key);
  }

  open(key) {
    this.disconnect();
    this.key = key;
    $('team-error').textContent = '';
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/ws/team`);
    this.socket = socket;
    socket.onopen = () => socket.send(JSON.stringify({ type: 'auth', api_key: key }));
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type !== 'team') return;
      sessionStorage.setItem(STORE, key);
      this.retryMs = 0;
      this.render(message.data);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (event.code === 1008) { // the gateway says the key is wrong: the only reason to forget it
        this.close();
        $('team-error').textContent = 'Unknown API key';
        return;
      }
      // a gateway restart, the exchange unavailable (1013): keep the key and try again
      this.retryMs = Math.min(Math.max(this.retryMs * 2, 1000), 10000);
      setTimeout(() => { if (!this.socket && this.key === key) this.open(key); }, this.retryMs);
    };
  }

  disconnect() {
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
  }

  close() { // logout: this tab forgets the key
    this.disconnect();
    this.key = null;
    sessionStorage.removeItem(STORE);
    this.show(false);
  }

  show(on) {
    $('team-view').hidden = !on;
    $('team-login').hidden = on;
  }

  render(view) {
    this.show(true);
    const t = view.team;
    const cell = (label, value, cls = '') => el('div', {}, el('label', { text: label }),
      el('span', { class: cls, text: value }));
    $('team-summary').replaceChildren(
      cell(t.team_id, t.team_name, 'big'),
      cell('role', roleName(t.role)),
      cell('P&L', view.pending ? 'waiting' : signed(t.pnl), 'big ' + signClass(t.pnl)),
      cell('cash', view.pending ? '' : signed(t.cash)),
      cell('fees', view.pending ? '' : signed(t.fees), signClass(t.fees)),
      cell('rank', view.pending ? '' : `#${t.rank ?? '–'}`));
    if (view.pending) return;
    if (view.history_from === null) this.chart.set(view.history);
    else this.chart.extend(view.history);
    replaceRows($('holdings').tBodies[0], view.holdings.map((h) => el('tr', {},
      el('td', { text: h.instrument_id }), el('td', { class: 'num', text: qty(h.quantity) }),
      el('td', { class: 'num', text: price(h.mark) }),
      el('td', { class: 'num ' + signClass(h.value), text: h.value === null ? '–' : signed(h.value) }))));
    replaceRows($('orders').tBodies[0], view.orders.map((o) => el('tr', {},
      el('td', { class: 'dim', text: wallTime(o.time) }), el('td', { text: o.instrument_id }),
      el('td', { class: o.side === 'buy' ? 'pos' : 'neg', text: o.side }),
      el('td', { class: 'num', text: price(o.price) }), el('td', { class: 'num', text: o.remaining }),
      el('td', { class: 'num', text: o.quantity }))));
    const fills = view.fills.map((f) => el('tr', {},
      el('td', { class: 'dim', text: wallTime(f.time) }), el('td', { text: f.instrument_id }),
      el('td', { class: f.side === 'buy' ? 'pos' : 'neg', text: f.side }),
      el('td', { class: 'num', text: price(f.price) }), el('td', { class: 'num', text: f.quantity }),
      el('td', { class: 'dim', text: f.liquidity }),
      el('td', { class: 'num ' + signClass(f.fee), text: signed(f.fee) })));
    const body = $('fills').tBodies[0];
    if (view.fills_after === null) replaceRows(body, fills);
    else { // the new fills only, newest first: on top, and as many kept as the gateway keeps
      body.prepend(...fills);
      while (body.rows.length > FILLS) body.lastElementChild.remove();
    }
  }
}
