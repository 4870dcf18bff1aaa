// The lag chart: an inline SVG polyline over the samples this page has seen (the API keeps no history
// of lag, so the chart starts when the page opens). Drawn with DOM calls so the strict CSP holds.
import { bytes } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const WIDTH = 480;
const HEIGHT = 120;
const PAD = 4;

function svg(tag, attributes) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

// samples: [{ at: milliseconds, lag: bytes }]
export function lagChart(samples) {
  const points = samples.filter((s) => typeof s.lag === 'number');
  const last = points.length ? points[points.length - 1].lag : null;
  const max = Math.max(1, ...points.map((s) => s.lag));
  const label = points.length
    ? `Lag over the last ${Math.max(1, Math.round((points[points.length - 1].at - points[0].at) / 1000))} seconds: now ${bytes(last)}, highest ${bytes(max)}`
    : 'No lag measured yet';
  const chart = svg('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': label, class: 'chart' });
  const title = svg('title', {});
  title.textContent = label;
  chart.append(title, svg('rect', { x: 0, y: 0, width: WIDTH, height: HEIGHT, class: 'chart-bg' }));
  if (points.length > 1) {
    const start = points[0].at;
    const span = Math.max(1, points[points.length - 1].at - start);
    const coordinates = points.map((s) => {
      const x = PAD + ((s.at - start) / span) * (WIDTH - 2 * PAD);
      const y = HEIGHT - PAD - (s.lag / max) * (HEIGHT - 2 * PAD);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    chart.append(svg('polyline', { points: coordinates.join(' '), class: 'chart-line' }));
  }
  const top = svg('text', { x: PAD + 2, y: 14, class: 'chart-label' });
  top.textContent = bytes(max);
  chart.append(top);
  return chart;
}
