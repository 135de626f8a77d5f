// The operator's controls, behind the admin key (X-Admin-Key on every /admin call).
import { el, replaceRows, signed, signClass, roleName } from './format.js';

const $ = (id) => document.getElementById(id);
const STORE = 'itg.adminKey';
const ORDERS_EVERY_MS = 2000; // open-order counts are not on the public stream: asked for

export class OperatorView {
  constructor(state) {
    this.state = state;
    this.key = null;
    this.choices = null;
    this.orders = {}; // team id -> resting orders, from /admin/leaderboard
    this.ordersAt = 0;
    $('admin-login').addEventListener('submit', (e) => {
      e.preventDefault();
      this.unlock(e.target.elements.key.value.trim());
    });
    $('phases').addEventListener('click', (e) => {
      const phase = e.target.dataset.phase;
      if (phase) this.post('/admin/phase', { phase }, `phase → ${phase}`);
    });
    $('speed-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const speed = Number(e.target.elements.speed.value);
      this.post('/admin/speed', { speed }, `speed → ${speed}`);
    });
    $('pause').addEventListener('click', () => this.post('/admin/speed', { speed: 0 }, 'paused'));
    $('regime-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const regime = e.target.elements.regime.value;
      this.post('/admin/regime', { regime }, `regime → ${regime}`);
    });
    $('halt-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.halt($('halt-instrument').value, true);
    });
    $('resume-button').addEventListener('click', () => this.halt($('halt-instrument').value, false));
    $('news-form').addEventListener('submit', (e) => { e.preventDefault(); this.news(e.target); });
  }

  restore() {
    const key = sessionStorage.getItem(STORE);
    if (key) this.unlock(key);
  }

  async unlock(key) {
    $('admin-error').textContent = '';
    const answer = await fetch('/admin/choices', { headers: { 'X-Admin-Key': key } });
    if (!answer.ok) {
      const body = await answer.json().catch(() => ({}));
      $('admin-error').textContent = body.detail || `HTTP ${answer.status}`;
      sessionStorage.removeItem(STORE);
      return;
    }
    this.key = key;
    sessionStorage.setItem(STORE, key);
    this.choices = await answer.json();
    this.build();
    $('admin-login').hidden = true;
    $('admin-view').hidden = false;
    this.refresh();
    this.teams(this.state.leaderboard);
  }

  build() {
    const c = this.choices;
    const options = (values) => values.map((v) => el('option', { value: v, text: v }));
    $('phases').replaceChildren(...c.phases.map((p) => el('button', {
      dataset: { phase: p }, text: p.replace('_', ' ') })));
    $('regime-form').elements.regime.replaceChildren(...options(c.regimes));
    $('halt-instrument').replaceChildren(...options(c.instruments));
    $('headlines').replaceChildren(...options(c.headlines));
  }

  // Phase and halts as the public stream shows them.
  refresh() {
    if (!this.key) return;
    const { phase, halted } = this.state.status;
    for (const b of $('phases').children) b.classList.toggle('active', b.dataset.phase === phase);
    replaceRows($('halted-list'), halted.map((iid) => el('li', {}, `${iid} `, el('button', {
      class: 'small', text: 'resume', onclick: () => this.halt(iid, false) }))));
  }

  teams(rows) {
    if (!this.key) return;
    this.fetchOrders();
    replaceRows($('admin-teams').tBodies[0], rows.map((r) => el('tr', { dataset: { team: r.team_id } },
      el('td', { text: `${r.team_name} (${r.team_id})` }), el('td', { text: roleName(r.role) }),
      el('td', { class: 'num ' + signClass(r.pnl), text: signed(r.pnl) }),
      el('td', { class: 'num', text: this.orders[r.team_id] ?? '' }),
      el('td', {}, el('button', { class: 'small danger', text: 'kill', onclick: () => {
        if (window.confirm(`Cancel every resting order of ${r.team_name}?`)) {
          this.post(`/admin/teams/${encodeURIComponent(r.team_id)}/kill`, null,
            `kill switch ${r.team_id}`);
        }
      } })))));
  }

  async fetchOrders() {
    const now = Date.now();
    if (now - this.ordersAt < ORDERS_EVERY_MS) return;
    this.ordersAt = now;
    const answer = await fetch('/admin/leaderboard', { headers: { 'X-Admin-Key': this.key } });
    if (!answer.ok) return;
    const { leaderboard } = await answer.json();
    this.orders = Object.fromEntries(leaderboard.map((r) => [r.team_id, r.open_orders]));
  }

  halt(instrumentId, halted) {
    this.post('/admin/halt', { instrument_id: instrumentId, halted },
      `${instrumentId} ${halted ? 'halted' : 'resumed'}`);
  }

  news(form) {
    const f = form.elements;
    const body = { headline: f.headline.value.trim() };
    if (f.direction.value) body.direction = f.direction.value;
    if (f.magnitude.value) body.magnitude = Number(f.magnitude.value);
    if (f.jump.checked) body.jump = true;
    if (f.regime_shift.checked) body.regime_shift = true;
    this.post('/admin/news', body, `news “${body.headline}”`);
  }

  async post(path, body, what) {
    let text;
    let ok = false;
    try {
      const answer = await fetch(path, {
        method: 'POST', headers: { 'X-Admin-Key': this.key, 'Content-Type': 'application/json' },
        body: body === null ? undefined : JSON.stringify(body),
      });
      const reply = await answer.json();
      ok = answer.ok && reply.success;
      text = ok ? what : `${what}: ${reply.error?.message || reply.detail || answer.status}`;
    } catch (error) {
      text = `${what}: ${error}`;
    }
    const log = $('admin-log');
    log.prepend(el('li', { class: ok ? 'ok' : 'err' },
      `${new Date().toLocaleTimeString('en-GB', { hour12: false })} ${ok ? '✓' : '✗'} ${text}`));
  }
}
