// Words of the operations page: Chinese by default, English on request (kept per browser).

const WORDS = {
  zh: {
    title: "gridwatch 一屏统览", username: "用户名", password: "密码", sign_in: "登录",
    sign_out: "退出", language: "English", map: "网格地图", unit: "单位", open_cases: "在办事件",
    overdue: "超期", nodes_offline: "离线设备", fleet: "设备运行", nodes_online: "设备在线率",
    cameras_online: "摄像头在线率", offline: "离线设备", work_orders: "运维工单", node: "设备",
    status: "状态", cameras: "摄像头", problems: "问题", live_alerts: "实时告警",
    pipeline: "事件闭环", tta_p50: "受理用时(中位)", ttr_p50: "办结用时(中位)",
    event_trends: "事件趋势(24小时)", back: "返回", camera: "摄像头", name: "名称",
    stream: "视频流", fps: "帧率", health: "运行状况", commands: "远程指令",
    send_command: "发送指令", time: "时间", command: "指令", by: "操作人",
    in_sync: "配置已同步",
    pending: "配置待生效", rejected: "配置被拒绝", no_config: "未下发配置",
    opened: "新增事件", cpu: "CPU %", disk: "磁盘 %", disk_space: "磁盘空间", outbox: "待发消息",
    camera_optional: "摄像头编号(可选)", own_level: "(本级)",
    login_failed: "用户名或密码错误", live: "实时", reconnecting: "重连中",
    unit_tree: "下级单位", agent: "版本", model: "模型", last_seen: "最近上报",
    config: "配置", none: "无", last_report: "最近上报", suspended_until: "暂停接入至",
    node_status: { online: "在线", offline: "离线", unknown: "未知", flapping: "频繁掉线" },
    stream_status: { connected: "已连接", connecting: "连接中", offline: "离线", disabled: "已停用" },
    command_name: {
      identify: "闪灯识别", snapshot: "抓拍", restart_camera: "重启摄像头",
      reload_config: "重新加载配置", recheck_zone: "复核区域",
    },
    command_status: { pending: "等待执行", ok: "已完成", error: "失败", expired: "已过期" },
    severity: { low: "低", medium: "中", high: "高", critical: "紧急" },
    states: {
      intake: "受理", triage: "研判", dispatch: "分流", handling: "处置中",
      supervision: "督办", feedback: "反馈", closed: "办结",
    },
    kind: {
      intrusion: "闯入", line_crossing: "越线", loitering: "徘徊", crowd: "聚集",
      object: "目标", motion: "异动", report: "网格员上报",
      node_offline: "设备离线", node_flapping: "频繁掉线", disk_full: "磁盘将满",
      outbox_backlog: "消息积压", config_rejected: "配置被拒",
      camera_unregistered: "未登记摄像头", camera_offline: "摄像头离线", node_suspended: "暂停接入",
      camera_tamper: "摄像头遮挡",
    },
    drift: (d) => `期望配置 v${d.want}，设备上报 v${d.got}${d.since ? `，已持续 ${d.since}` : ""}`,
  },
  en: {
    title: "gridwatch operations", username: "Username", password: "Password",
    sign_in: "Sign in", sign_out: "Sign out", language: "中文", map: "Grid map", unit: "Unit",
    open_cases: "Open cases", overdue: "Overdue", nodes_offline: "Boxes offline",
    fleet: "Fleet health", nodes_online: "Boxes online", cameras_online: "Cameras online",
    offline: "Offline", work_orders: "Work orders", node: "Box", status: "Status",
    cameras: "Cameras", problems: "Problems", live_alerts: "Live alerts",
    pipeline: "Case pipeline", tta_p50: "Time to acknowledge (median)",
    ttr_p50: "Time to resolve (median)", event_trends: "Event trends (24 h)", back: "Back",
    camera: "Camera", name: "Name", stream: "Stream", fps: "fps", health: "Health",
    commands: "Commands", send_command: "Send command", time: "Time", command: "Command",
    by: "By",
    in_sync: "config in sync", pending: "config pending", rejected: "config rejected",
    no_config: "no config issued", opened: "Opened", cpu: "CPU %", disk: "Disk %",
    disk_space: "Disk", camera_optional: "camera id (optional)", own_level: "(itself)",
    outbox: "Unsent", login_failed: "Wrong username or password", live: "live",
    reconnecting: "reconnecting", unit_tree: "Units", agent: "Agent", model: "Model",
    last_seen: "Last seen", config: "Config", none: "none", last_report: "last report",
    suspended_until: "Suspended until",
    node_status: { online: "online", offline: "offline", unknown: "unknown", flapping: "flapping" },
    stream_status: {
      connected: "connected", connecting: "connecting", offline: "offline", disabled: "disabled",
    },
    command_name: {
      identify: "identify", snapshot: "snapshot", restart_camera: "restart camera",
      reload_config: "reload config", recheck_zone: "recheck zone",
    },
    command_status: { pending: "pending", ok: "done", error: "failed", expired: "expired" },
    severity: { low: "low", medium: "medium", high: "high", critical: "critical" },
    states: {
      intake: "intake", triage: "triage", dispatch: "dispatch", handling: "handling",
      supervision: "supervision", feedback: "feedback", closed: "closed",
    },
    kind: {
      intrusion: "intrusion", line_crossing: "line crossing", loitering: "loitering",
      crowd: "crowd", object: "object", motion: "motion", report: "worker's report",
      node_offline: "box offline", node_flapping: "link flapping", disk_full: "disk nearly full",
      outbox_backlog: "backlog", config_rejected: "config rejected",
      camera_unregistered: "unregistered camera", node_suspended: "suspended",
      camera_offline: "camera offline", camera_tamper: "camera tampered",
    },
    drift: (d) => `desired v${d.want}, reported v${d.got}${d.since ? ` since ${d.since}` : ""}`,
  },
};

let language = localStorage.getItem("gridwatch.lang") === "en" ? "en" : "zh";
// The county's time zone (from /auth/me): hours and days on the screen are the county's,
// whatever the zone of the browser showing them.
let zone;

export function setZone(value) {
  zone = value;
}

export function lang() {
  return language;
}

export function setLang(value) {
  language = value === "en" ? "en" : "zh";
  localStorage.setItem("gridwatch.lang", language);
  document.documentElement.lang = language === "zh" ? "zh-CN" : "en";
  applyWords();
}

export function t(key) {
  const value = WORDS[language][key];
  return value === undefined ? key : value;
}

export function named(group, key) {
  return (WORDS[language][group] || {})[key] || key;
}

export function applyWords(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of root.querySelectorAll("[data-named]")) {
    el.textContent = named(el.dataset.named, el.value);
  }
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll(".lang-toggle")) {
    el.textContent = t("language");
  }
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  const zh = language === "zh";
  if (s < 60) return zh ? `${s}秒` : `${s} s`;
  if (s < 3600) return zh ? `${Math.round(s / 60)}分钟` : `${Math.round(s / 60)} min`;
  if (s < 86400) return zh ? `${(s / 3600).toFixed(1)}小时` : `${(s / 3600).toFixed(1)} h`;
  return zh ? `${(s / 86400).toFixed(1)}天` : `${(s / 86400).toFixed(1)} d`;
}

export function clockTime(iso) {
  return new Date(iso).toLocaleString(language === "zh" ? "zh-CN" : "en-GB", {
    hour12: false, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", timeZone: zone,
  });
}

// "HH:MM" and "MM-DD" of an instant, in the county's zone.
export function countyHour(iso) {
  return new Date(iso).toLocaleTimeString("en-GB", {
    hour: "2-digit", minute: "2-digit", hour12: false, timeZone: zone,
  });
}

export function countyDay(iso) {
  const parts = new Intl.DateTimeFormat("en-CA", {
    month: "2-digit", day: "2-digit", timeZone: zone,
  }).formatToParts(new Date(iso));
  const part = (type) => parts.find((p) => p.type === type).value;
  return `${part("month")}-${part("day")}`;
}
