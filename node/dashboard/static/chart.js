/* A small bar chart in SVG, written for the dashboard (no library, nothing fetched).
   meterlineChart.bars(points, unit) → an <svg>: one group per hour, a bar for what was sent
   and one for what was received. points: [{t: bucket start ms, sent: number, received: number}]
   oldest first. */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 320, H = 150, PAD_L = 44, PAD_B = 22, PAD_T = 8, PAD_R = 6;

  function node(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function hour(ms) {
    const d = new Date(ms);
    return String(d.getHours()).padStart(2, "0") + ":00";
  }

  function short(n) {
    if (n >= 1e6) return (n / 1e6).toPrecision(3) + "M";
    if (n >= 1e3) return (n / 1e3).toPrecision(3) + "k";
    return String(Math.round(n * 1000) / 1000);
  }

  function bars(points, unit) {
    const svg = node("svg", {viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                             "aria-label": `usage of ${unit} per hour`});
    const max = Math.max(1e-9, ...points.map(p => Math.max(p.sent, p.received)));
    const plotW = W - PAD_L - PAD_R, plotH = H - PAD_T - PAD_B;
    svg.appendChild(node("line", {class: "axis", x1: PAD_L, y1: PAD_T + plotH,
                                  x2: W - PAD_R, y2: PAD_T + plotH}));
    svg.appendChild(node("line", {class: "axis", x1: PAD_L, y1: PAD_T, x2: PAD_L,
                                  y2: PAD_T + plotH}));
    svg.appendChild(node("text", {x: PAD_L - 4, y: PAD_T + 8, "text-anchor": "end"}, short(max)));
    svg.appendChild(node("text", {x: PAD_L - 4, y: PAD_T + plotH, "text-anchor": "end"}, "0"));
    const slot = plotW / Math.max(1, points.length);
    const bar = Math.max(1, Math.min(24, slot / 2 - 1));
    points.forEach((p, i) => {
      const x0 = PAD_L + i * slot + (slot - 2 * bar) / 2;
      for (const [k, dx] of [["sent", 0], ["received", bar]]) {
        const h = (p[k] / max) * plotH;
        if (h <= 0) continue;
        const r = node("rect", {class: `bar-${k}`, x: x0 + dx, y: PAD_T + plotH - h,
                                width: bar, height: h});
        r.appendChild(node("title", {}, `${hour(p.t)} ${k} ${p[k]} ${unit}`));
        svg.appendChild(r);
      }
    });
    if (points.length) {
      svg.appendChild(node("text", {x: PAD_L, y: H - 6}, hour(points[0].t)));
      if (points.length > 1) {
        svg.appendChild(node("text", {x: W - PAD_R, y: H - 6, "text-anchor": "end"},
                             hour(points[points.length - 1].t)));
      }
    }
    return svg;
  }

  window.meterlineChart = {bars};
}());
