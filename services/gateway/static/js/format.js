// Formatting and DOM helpers. Server text always goes in through textContent, never as HTML.

const money = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

export function price(value) {
  return value === null || value === undefined ? '–' : Number(value).toFixed(2);
}

// Signed money with thousands separators: "+1,234.50", "-0.20", "0.00".
export function signed(value) {
  const n = Number(value || 0);
  const text = money.format(Math.abs(n));
  if (n > 0) return '+' + text;
  if (n < 0) return '-' + text;
  return text;
}

export function signClass(value) {
  const n = Number(value || 0);
  return n > 0 ? 'pos' : n < 0 ? 'neg' : '';
}

export function qty(value) {
  const n = Number(value || 0);
  return n > 0 ? '+' + n : String(n);
}

export function compact(value) {
  const n = Number(value || 0);
  const abs = Math.abs(n);
  const sign = n < 0 ? '-' : '+';
  if (abs >= 1e6) return sign + (abs / 1e6).toFixed(1) + 'M';
  if (abs >= 1e3) return sign + (abs / 1e3).toFixed(1) + 'k';
  return sign + abs.toFixed(0);
}

// Game seconds as hh:mm:ss (the chart's time axis is game time).
export function gameClock(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const pad = (n) => String(n).padStart(2, '0');
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
}

export function wallTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString('en-GB', { hour12: false });
}

export function roleName(role) {
  return { market_maker: 'market maker', hedge_fund: 'hedge fund' }[role] || role;
}
