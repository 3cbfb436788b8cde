// ECharts options of the page: one function per chart, fed with API answers.
/* global echarts */

import { countyDay, countyHour, named, t } from "./i18n.js";

const charts = new Map();

export function chart(id) {
  const el = document.getElementById(id);
  let instance = charts.get(id);
  if (!instance || instance.getDom() !== el) {
    instance = echarts.init(el, "dark", { renderer: "canvas" });
    charts.set(id, instance);
  }
  return instance;
}

window.addEventListener("resize", () => charts.forEach((c) => c.resize()));

const AXIS = { axisLabel: { color: "#9fb3c8" }, splitLine: { lineStyle: { color: "#1e3350" } } };
// No animation: the screen refreshes every few seconds and must not flicker while it does.
const BASE = { backgroundColor: "transparent", textStyle: { color: "#d6e2f0" }, animation: false };
// Points drawn even where a line has one value (a new box has one hour of history).
const LINE = { type: "line", showSymbol: true, symbolSize: 6, connectNulls: true };

// Grids coloured by open cases; a grid whose cameras are down is outlined in red. Regions
// are keyed by code in the GeoJSON and shown by name (nameMap; a repeated name gets its
// code, so two "第一网格" stay apart).
export function gridMap(id, geojson, onPick) {
  const c = chart(id);
  const map = `grids-${geojson.unit_code}`;
  const count = new Map();
  for (const f of geojson.features) {
    count.set(f.properties.name, (count.get(f.properties.name) || 0) + 1);
  }
  const names = Object.fromEntries(geojson.features.map(({ properties: p }) => [
    p.code, count.get(p.name) > 1 ? `${p.name} ${p.code}` : p.name,
  ]));
  const features = geojson.features.map((f) => ({
    ...f, properties: { ...f.properties, name: f.properties.code },
  }));
  echarts.registerMap(map, { type: "FeatureCollection", features });
  const max = Math.max(1, ...features.map((f) => f.properties.open_cases));
  c.setOption({
    ...BASE,
    tooltip: {
      formatter: (p) => {
        const d = p.data || {};
        return `${p.name}<br>${t("open_cases")}: ${d.value ?? 0}` +
          `<br>${t("overdue")}: ${d.overdue ?? 0}<br>${t("cameras")}: ` +
          `${(d.cameras ?? 0) - (d.down ?? 0)}/${d.cameras ?? 0}`;
      },
    },
    visualMap: {
      min: 0, max, left: 8, bottom: 8, calculable: false, text: [String(max), "0"],
      inRange: { color: ["#173a5e", "#f5a623", "#e5484d"] }, textStyle: { color: "#9fb3c8" },
    },
    series: [{
      type: "map", map, roam: true, selectedMode: false, nameMap: names,
      label: { show: features.length <= 40, color: "#d6e2f0", fontSize: 11 },
      itemStyle: { borderColor: "#3b5b80", areaColor: "#173a5e" },
      emphasis: { label: { show: true }, itemStyle: { areaColor: "#2d6cdf" } },
      data: features.map((f) => {
        const p = f.properties;
        const down = p.cameras > 0 && p.cameras_down > 0;
        return {
          name: names[p.code], value: p.open_cases, overdue: p.overdue_cases,
          cameras: p.cameras, down: p.cameras_down, child: p.child_code,
          itemStyle: down ? { borderColor: "#ff4d4f", borderWidth: 2 } : undefined,
        };
      }),
    }],
  }, true);
  c.off("click");
  c.on("click", (p) => p.data && onPick(p.data.child));
  return c;
}

// Horizontal bars, the loop's steps top to bottom: seven labels side by side overlapped in
// a narrow panel, and every step must stay named.
export function caseStates(id, byState, order) {
  chart(id).setOption({
    ...BASE,
    grid: { left: 8, right: 36, top: 6, bottom: 6, containLabel: true },
    tooltip: {},
    yAxis: { type: "category", inverse: true, data: order.map((s) => named("states", s)), ...AXIS,
             axisLabel: { color: "#9fb3c8", interval: 0, fontSize: 11 } },
    xAxis: { type: "value", minInterval: 1, ...AXIS },
    series: [{ type: "bar", data: order.map((s) => byState[s] || 0),
               label: { show: true, position: "right", color: "#d6e2f0" },
               itemStyle: { color: "#2d9cdb" } }],
  }, true);
}

export function caseTimes(id, daily) {
  // Each day is the county's calendar day ("YYYY-MM-DD"), counted by the service.
  const days = daily.map((d) => d.day.slice(5));
  const minutes = (s) => (s === null ? null : Math.round(s / 6) / 10);
  chart(id).setOption({
    ...BASE,
    // Room for a legend of two lines: three Chinese names wrap in the narrow panel.
    grid: { left: 40, right: 40, top: 56, bottom: 24 },
    tooltip: { trigger: "axis" },
    legend: { top: 0, textStyle: { color: "#d6e2f0" } },
    xAxis: { type: "category", data: days, ...AXIS },
    yAxis: [
      { type: "value", ...AXIS },
      { type: "value", minInterval: 1, ...AXIS, splitLine: { show: false } },
    ],
    series: [
      { name: t("tta_p50"), ...LINE, data: daily.map((d) => minutes(d.acknowledged_p50_s)) },
      { name: t("ttr_p50"), ...LINE, data: daily.map((d) => minutes(d.resolved_p50_s)) },
      { name: t("opened"), type: "bar", yAxisIndex: 1, data: daily.map((d) => d.opened),
        itemStyle: { color: "#3b5b80" } },
    ],
  }, true);
}

// Every hour of the last day on the axis, quiet hours as zero.
export function eventTrends(id, points, hours = 24) {
  const HOUR = 3600e3;
  const last = Math.floor(Date.now() / HOUR) * HOUR;
  const buckets = Array.from({ length: hours }, (_, i) => last - (hours - 1 - i) * HOUR);
  const index = new Map(buckets.map((b, i) => [b, i]));
  const kinds = [...new Set(points.map((p) => p.kind))].sort();
  chart(id).setOption({
    ...BASE,
    grid: { left: 40, right: 10, top: 36, bottom: 30 },
    tooltip: { trigger: "axis" },
    legend: { top: 0, textStyle: { color: "#d6e2f0" } },
    xAxis: { type: "category", data: buckets.map((b) => countyHour(b)), ...AXIS },
    yAxis: { type: "value", minInterval: 1, ...AXIS },
    series: kinds.map((kind) => {
      const data = new Array(buckets.length).fill(0);
      for (const p of points) {
        const i = index.get(Date.parse(p.bucket));
        if (p.kind === kind && i !== undefined) data[i] += p.events;
      }
      return { name: named("kind", kind), type: "bar", stack: "events", data };
    }),
  }, true);
}

export function nodeHealth(id, hours) {
  const x = hours.map((h) => `${countyDay(h.bucket)} ${countyHour(h.bucket)}`);
  const pct = (used, total) => (total ? Math.round((1000 * used) / total) / 10 : null);
  chart(id).setOption({
    ...BASE,
    grid: { left: 40, right: 50, top: 36, bottom: 30 },
    tooltip: { trigger: "axis" },
    legend: { top: 0, textStyle: { color: "#d6e2f0" } },
    xAxis: { type: "category", data: x, ...AXIS },
    yAxis: [
      { type: "value", max: 100, ...AXIS },
      { type: "value", minInterval: 1, ...AXIS, splitLine: { show: false } },
    ],
    series: [
      { name: t("cpu"), ...LINE, data: hours.map((h) => h.cpu_avg && +h.cpu_avg.toFixed(1)) },
      { name: t("disk"), ...LINE,
        data: hours.map((h) => pct(h.disk_used_max, h.disk_total_max)) },
      { name: t("outbox"), type: "bar", yAxisIndex: 1, data: hours.map((h) => h.outbox_depth_max),
        itemStyle: { color: "#f5a623" } },
    ],
  }, true);
}

export function resizeAll() {
  charts.forEach((c) => c.resize());
}
