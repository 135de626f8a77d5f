// Charts (TradingView lightweight-charts): the underlyings with past regimes and news markers,
// and a team's P&L path. The time axis of the market chart is game time (seconds from start).
import {
  createChart, createSeriesMarkers, AreaSeries, ColorType, LineSeries, LineType, BaselineSeries,
} from '../vendor/lightweight-charts.standalone.production.mjs';
import { gameClock } from './format.js';

const REGIME_COLORS = ['rgba(62,207,142,0.13)', 'rgba(245,185,66,0.13)', 'rgba(255,107,107,0.2)',
  'rgba(79,195,247,0.13)'];
const FULL_HEIGHT = () => ({ priceRange: { minValue: 0, maxValue: 1 } });
const BASE = {
  autoSize: true,
  layout: { background: { type: ColorType.Solid, color: '#121b26' }, textColor: '#8397ab',
    fontSize: 11 },
  grid: { vertLines: { color: '#18232f' }, horzLines: { color: '#18232f' } },
  crosshair: { mode: 0 },
};

export class MarketChart {
  // `keep`: points per series, as many as the server keeps (board.HISTORY); a page left open
  // for a whole game trims to it each time it holds twice as many.
  constructor(container, legend, keep = 20000) {
    this.legend = legend;
    this.keep = keep;
    this.chart = createChart(container, {
      ...BASE,
      leftPriceScale: { visible: true, borderColor: '#223142' },
      rightPriceScale: { visible: true, borderColor: '#223142' },
      timeScale: { borderColor: '#223142', timeVisible: true, secondsVisible: true,
        minBarSpacing: 0.05, tickMarkFormatter: (t) => gameClock(t) },
      localization: { timeFormatter: (t) => 'game ' + gameClock(t) },
    });
    this.bands = [];  // one stepped area per regime (1 = in force, 0 = not), full height
    this.spx = this.chart.addSeries(LineSeries, { color: '#4fc3f7', lineWidth: 2,
      priceScaleId: 'right', title: 'SPX', priceLineVisible: false });
    this.spy = this.chart.addSeries(LineSeries, { color: '#ffb74d', lineWidth: 1,
      priceScaleId: 'left', title: 'SPY', priceLineVisible: false });
    this.markers = createSeriesMarkers(this.spx, []);
    this.series = { SPX: this.spx, SPY: this.spy };
    // The whole game stays in view as it grows (fitted once, the first seconds' bar spacing
    // kept and only the last seconds showed: no regime band, no old news), until the user
    // zooms or drags; a double-click goes back to the whole game.
    this.follow = true;
    this.fitting = false;
    const stop = () => { this.follow = false; };
    container.addEventListener('wheel', stop, { passive: true });
    container.addEventListener('touchmove', stop, { passive: true });
    container.addEventListener('mousemove', (e) => { if (e.buttons) stop(); });  // a drag
    container.addEventListener('dblclick', () => { this.follow = true; this.fit(); });
    this.reset({}, [], { spans: [], until_s: 0 }, []);
  }

  // At most once a frame: points can come many times a second at a high game speed.
  fit() {
    if (this.fitting) return;
    this.fitting = true;
    requestAnimationFrame(() => {
      this.fitting = false;
      if (this.follow) this.chart.timeScale().fitContent();
    });
  }

  reset(history, news, regimes, names) {
    this.names = names;
    this.makeBands(names);
    this.points = [];  // SPX times, to shade regimes as they are released
    this.added = 0;  // SPX points since the last trim
    this.last = {};
    for (const [symbol, series] of Object.entries(this.series)) {
      const data = (history[symbol] || []).map(([time, value]) => ({ time, value }));
      series.setData(data);
      this.last[symbol] = data.length ? data[data.length - 1].time : -1;
      if (symbol === 'SPX') this.points = data.map((p) => p.time);
    }
    this.news = [];
    this.shaded = 0;
    this.setRegimes(regimes);
    this.addNews(news);
    this.follow = true;
    this.chart.timeScale().fitContent();
  }

  addPoints(symbol, points) {
    const series = this.series[symbol];
    if (!series) return;
    const before = this.last[symbol];
    for (const [time, value] of points) {
      if (time < this.last[symbol]) continue;  // never backwards (the library would throw)
      series.update({ time, value });
      if (symbol === 'SPX' && time > this.last[symbol]) {
        this.points.push(time);
        this.added += 1;
      }
      this.last[symbol] = time;
    }
    if (this.added > this.keep) this.trim();
    const newest = this.news.length ? this.news[this.news.length - 1].time : -1;
    if (symbol === 'SPX' && newest > before) this.addNews([]);  // markers that now have a bar
    this.shade();
    if (this.follow) this.fit();
  }

  trim() {
    for (const series of [...Object.values(this.series), ...this.bands]) {
      const data = series.data();
      if (data.length > this.keep) series.setData(data.slice(-this.keep));
    }
    const first = this.spx.data()[0]?.time ?? 0;
    this.news = this.news.filter((m) => m.time >= first);
    this.addNews([]);
    this.added = 0;
  }

  makeBands(names) {
    for (const band of this.bands) this.chart.removeSeries(band);
    this.bands = names.map((_, i) => {
      const color = REGIME_COLORS[i % REGIME_COLORS.length];
      const band = this.chart.addSeries(AreaSeries, {
        priceScaleId: 'regime', lineVisible: false, lineType: LineType.WithSteps,
        lineColor: 'rgba(0,0,0,0)', topColor: color,
        bottomColor: color, priceLineVisible: false, lastValueVisible: false,
        crosshairMarkerVisible: false, autoscaleInfoProvider: FULL_HEIGHT });
      band.setSeriesOrder(0);  // behind the prices
      return band;
    });
    this.chart.priceScale('regime').applyOptions({ scaleMargins: { top: 0, bottom: 0 },
      visible: false });
  }

  // Past regimes only: the server releases them `delay_s` of game time after the fact. With a
  // `from_s`, an update carries only the spans from the one in force then: they replace ours
  // from its start on.
  setRegimes(regimes) {
    const spans = regimes.spans || [];
    if (!regimes.from_s) this.spans = spans;
    else if (spans.length) {
      const start = spans[0][0];
      this.spans = this.spans.filter((s) => s[0] < start).concat(spans);
    }
    this.until = regimes.until_s || 0;
    this.shade();
    this.drawLegend(regimes.delay_s);
  }

  shade() {
    let span = 0;
    while (this.shaded < this.points.length && this.points[this.shaded] < this.until) {
      const time = this.points[this.shaded++];
      while (span < this.spans.length - 1 && this.spans[span][1] <= time) span++;
      const found = this.spans[span];
      const index = found && found[0] <= time && time < found[1] ? this.names.indexOf(found[2]) : -1;
      this.bands.forEach((band, i) => band.update({ time, value: i === index ? 1 : 0 }));
    }
    // what is shaded is never looked at again: keep the lists to what is still to come
    if (span) this.spans.splice(0, span);
    if (this.shaded > 1000) {
      this.points.splice(0, this.shaded);
      this.shaded = 0;
    }
  }

  drawLegend(delay) {
    const items = this.names.map((name, i) => {
      const swatch = document.createElement('i');
      swatch.style.background = REGIME_COLORS[i % REGIME_COLORS.length].replace(/0\.\d+\)/, '0.8)');
      const label = document.createElement('span');
      label.append(swatch, name);
      return label;
    });
    const note = document.createElement('span');
    note.textContent = delay !== undefined
      ? `vol regimes shown ${gameClock(delay)} of game time after the fact` : '';
    const lines = ['SPX: right scale', 'SPY: left scale'].map((t) => {
      const s = document.createElement('span');
      s.textContent = t;
      return s;
    });
    this.legend.replaceChildren(...lines, ...items, note);
  }

  addNews(items) {
    for (const n of items) {
      const up = n.direction === 'up';
      const down = n.direction === 'down';
      this.news.push({
        time: Math.round(n.game_s), position: down ? 'aboveBar' : 'belowBar',
        shape: up ? 'arrowUp' : down ? 'arrowDown' : 'circle',
        color: up ? '#3ecf8e' : down ? '#ff6b6b' : '#8397ab', text: `#${n.news_id}`,
      });
    }
    this.news.sort((a, b) => a.time - b.time);
    this.markers.setMarkers(this.news.filter((m) => m.time <= this.last.SPX));
  }
}

export class PnlChart {
  // `keep`: as many points as the gateway keeps per team (scores.HISTORY); a page left open
  // trims to it each time it holds twice as many.
  constructor(container, keep = 3600) {
    this.keep = keep;
    this.last = -1;  // the time of the last point shown
    this.added = 0;  // points since the last trim
    this.chart = createChart(container, {
      ...BASE,
      rightPriceScale: { borderColor: '#223142' },
      timeScale: { borderColor: '#223142', timeVisible: true, secondsVisible: true,
        minBarSpacing: 0.05 },
    });
    this.series = this.chart.addSeries(BaselineSeries, { baseValue: { type: 'price', price: 0 },
      topLineColor: '#3ecf8e', bottomLineColor: '#ff6b6b', priceLineVisible: false });
  }

  set(history) {
    this.series.setData(history.map(([time, value]) => ({ time, value: Number(value) })));
    this.last = history.length ? history[history.length - 1][0] : -1;
    this.added = 0;
    this.chart.timeScale().fitContent();
  }

  // Points from the last one shown on: that one is replaced, the newer ones added.
  extend(points) {
    for (const [time, value] of points) {
      if (time < this.last) continue;  // never backwards (the library would throw)
      this.series.update({ time, value: Number(value) });
      if (time > this.last) this.added += 1;
      this.last = time;
    }
    if (this.added > this.keep) {
      this.series.setData(this.series.data().slice(-this.keep));
      this.added = 0;
    }
    this.chart.timeScale().fitContent();
  }
}
