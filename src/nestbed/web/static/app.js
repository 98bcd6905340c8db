// nestbed web view: the vtopo and the ptopo side by side, live traffic, events and link control.
// Data: GET /api/topology once, then the /api/stream SSE feed (counters frames indexed like topology.links,
// and store events); a selected node's panel polls GET /api/node/<name>; link control is POST /api/link/<name>.
// Everything is same-origin: the token travels in the HttpOnly cookie the first tokened load set.
"use strict";

(function () {
  const LEGIT = [43, 108, 176];           // blue: legitimate traffic
  const ATTACK = [214, 40, 40];           // red: DSCP-8 (attack) traffic
  const IDLE = "#b8bec6";
  const HISTORY = 120;                    // frames kept for a selected link's plot (1–2 a second)
  const NODE_WINDOW = 300;                // s of a node's rates in its plot
  const LARGE = 2000;                     // elements: above this, cheaper drawing (haystack edges, no labels)
  const STALE_MS = 5000;
  const CHUNK = 200;                      // a folded ptopo unfolds a host's own nodes this many at a time
  const EVENTS_KEPT = 2000;               // events in the log and on the plots (the store keeps them all)

  const view = {
    topology: null, vtopo: null, ptopo: null, ready: false,
    frames: 0, lastFrame: null, history: [], events: [], selected: null,
    styleKey: [],                         // per link: the last style drawn, so a frame restyles only what changed
    linkEdges: [],                        // per link: its vtopo edges
    linkIndex: new Map(),                 // link name → index in topology.links and in frames
  };
  window.nestbed = view;                  // for tests and the curious: the panes, the last frame, the events

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  };

  function fail(line) {
    const box = $("error");
    box.textContent = line;
    box.hidden = false;
  }

  async function getJSON(url) {
    const answer = await fetch(url, { credentials: "same-origin" });
    if (!answer.ok) throw new Error((await answer.text()).trim() || `${url}: HTTP ${answer.status}`);
    return answer.json();
  }

  // -- units -------------------------------------------------------------------------------------------------
  function bits(value) {                    // bit/s → "10 Mbit/s"
    if (value === null || value === undefined) return "unshaped";
    const units = [[1e9, "Gbit/s"], [1e6, "Mbit/s"], [1e3, "kbit/s"]];
    for (const [size, unit] of units) if (value >= size) return `${+(value / size).toPrecision(3)} ${unit}`;
    return `${value} bit/s`;
  }
  const kbits = (kbit) => (kbit === null || kbit === undefined ? "–" : bits(kbit * 1000));
  function tick(kbit) {                     // short axis labels: 800k, 1.2M, 10G
    if (!kbit) return "0";
    if (kbit >= 1e6) return `${+(kbit / 1e6).toPrecision(3)}G`;
    if (kbit >= 1e3) return `${+(kbit / 1e3).toPrecision(3)}M`;
    return `${+kbit.toPrecision(3)}k`;
  }
  const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });

  // -- link style from a frame ---------------------------------------------------------------------------------
  function utilization(link, kbit) {
    if (!kbit) return 0;
    if (link.bandwidth) return Math.min(1, (kbit * 1000) / link.bandwidth);
    return Math.min(1, Math.log10(1 + kbit) / 6);        // unshaped: 1 Gbit/s counts as full
  }

  function mix(share) {                                   // attack share 0..1 → colour between blue and red
    const c = LEGIT.map((v, i) => Math.round(v + (ATTACK[i] - v) * share));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  function linkStyle(index) {
    const link = view.topology.links[index];
    const frame = view.lastFrame;
    const rate = frame ? frame.rate[index] : null;
    const attack = frame ? frame.attack[index] : null;
    if (link.state === "down") return { key: "down", color: IDLE, width: 1.5, state: "down", rate, attack };
    if (!rate) return { key: "idle", color: IDLE, width: 1.5, state: "up", rate, attack };
    const level = Math.round(utilization(link, rate) * 10);          // 11 widths
    const share = Math.round((attack || 0) / 10);                    // 11 colours
    return { key: `${level}:${share}`, color: mix(share / 10), width: 2 + level * 0.8, state: "up", rate, attack };
  }
  view.linkStyle = (name) => {
    const index = view.linkIndex.get(name);
    return index === undefined ? null : linkStyle(index);
  };

  function restyle() {
    const cy = view.vtopo;
    cy.batch(() => {
      view.topology.links.forEach((link, index) => {
        const style = linkStyle(index);
        if (view.styleKey[index] === style.key) return;
        view.styleKey[index] = style.key;
        view.linkEdges[index].data({ color: style.color, width: style.width });
        view.linkEdges[index].toggleClass("down", style.state === "down");
      });
    });
  }

  // -- the panes -----------------------------------------------------------------------------------------------
  function hasPositions(items, x, y) {
    return items.length > 0 && items.every((item) => Number.isFinite(item[x]) && Number.isFinite(item[y]));
  }

  function baseStyle(large) {
    return [
      { selector: "node", style: {
        "label": large ? "" : "data(label)", "font-size": 10, "text-valign": "bottom", "text-margin-y": 2,
        "width": 14, "height": 14, "background-color": "#4a5568", "color": "#1a202c" } },
      { selector: "node[kind = 'qemu']", style: { "shape": "round-rectangle", "background-color": "#6b46c1" } },
      { selector: "node[kind = 'lan']", style: { "shape": "diamond", "width": 10, "height": 10,
        "background-color": "#718096", "label": large ? "" : "data(label)", "font-size": 8 } },
      { selector: "edge", style: { "curve-style": large ? "haystack" : "straight", "line-color": "data(color)",
        "width": "data(width)", "font-size": 9, "text-rotation": "autorotate" } },
      { selector: "edge.down", style: { "line-style": "dashed", "line-color": IDLE } },
      { selector: ".lit", style: { "background-color": "#dd6b20", "line-color": "#dd6b20", "label": "data(label)",
        "z-index": 10 } },
      { selector: "node:selected", style: { "background-color": "#c05621", "border-width": 3,
        "border-color": "#7b341e", "label": "data(label)", "z-index": 20 } },
      // a selected or lit link keeps its traffic colour: an overlay marks it
      { selector: "edge.lit, edge:selected", style: { "line-color": "data(color)", "overlay-color": "#dd6b20",
        "overlay-opacity": 0.3, "overlay-padding": 3, "label": "data(label)", "z-index": 20 } },
      { selector: ":parent", style: { "background-opacity": 0.06, "border-width": 1, "border-color": "#a0aec0",
        "text-valign": "top", "label": "data(label)", "font-size": 11, "padding": 8 } },
      { selector: "node.host", style: { "background-color": "#2c5282", "border-width": 2 } },
      { selector: "node.group", style: { "shape": "round-rectangle", "background-color": "#a0aec0",
        "label": "data(label)", "width": "data(w)", "height": "data(h)", "font-size": "data(fs)",
        "text-valign": "center" } },
    ];
  }

  function pane(container, elements, layout, large) {
    return cytoscape({
      container, elements, layout, style: baseStyle(large), boxSelectionEnabled: false, maxZoom: 2.5, minZoom: 0.01,
      textureOnViewport: large, hideEdgesOnViewport: large, pixelRatio: large ? 1 : "auto",
    });
  }

  function fallbackLayout(count, compound) {
    if (count <= 400) return { name: "fcose", animate: false, randomize: true, quality: "default", nodeDimensionsIncludeLabels: !compound };
    return { name: "grid", avoidOverlap: true };
  }

  function drawVtopo(topology) {
    const positioned = hasPositions(topology.nodes, "x", "y");
    const at = (item) => (positioned && Number.isFinite(item.x) ? { position: { x: item.x, y: item.y } } : {});
    const elements = topology.nodes.map((node) => ({ group: "nodes", data: { id: node.name, label: node.name,
      kind: node.kind }, ...at(node) }));
    topology.links.forEach((link, index) => {
      view.linkIndex.set(link.name, index);
      if (link.kind === "lan" || link.members.length !== 2) {
        const hub = `lan:${link.name}`;
        elements.push({ group: "nodes", data: { id: hub, label: link.name, kind: "lan", link: index }, ...at(link) });
        link.members.forEach((member, k) => elements.push({ group: "edges", data: { id: `e:${index}:${k}`,
          source: hub, target: member, link: index, label: link.name, color: IDLE, width: 1.5 } }));
      } else {
        elements.push({ group: "edges", data: { id: `e:${index}`, source: link.members[0],
          target: link.members[1], link: index, label: link.name, color: IDLE, width: 1.5 } });
      }
    });
    const large = elements.length > LARGE;
    const layout = positioned ? { name: "preset", fit: true, padding: 20 } : fallbackLayout(topology.nodes.length, false);
    const cy = pane($("vtopo"), elements, layout, large);
    view.linkEdges = topology.links.map(() => cy.collection());
    cy.edges().forEach((edge) => { view.linkEdges[edge.data("link")].merge(edge); });
    view.styleKey = topology.links.map(() => "");
    return cy;
  }

  // ptopo: host boxes, VM boxes (vhosts) inside, process nodes inside those; a qemu VM that is its node is a leaf.
  // Collapsed (large experiments): each VM, and each host's own processes, is one group box until clicked.
  function ptopoElements(topology) {
    const elements = [];
    const hostPositions = topology.host_positions || {};
    for (const host of topology.hosts) {
      const at = hostPositions[host] ? { position: { x: hostPositions[host][0], y: hostPositions[host][1] } } : {};
      elements.push({ group: "nodes", data: { id: `host:${host}`, label: host, kind: "host" }, classes: "host", ...at });
    }
    const members = new Map();
    const boxes = new Map();
    for (const vm of topology.vms) if (vm.kind !== "qemu") boxes.set(vm.name, vm);
    view.groupOf = new Map();
    const onHost = new Map();                  // host → how many of its own nodes (not in a vhost) so far
    for (const node of topology.nodes) {
      let box = `vm:${node.vm}`;
      if (!node.vm || !boxes.has(node.vm)) {   // a host's own nodes fold in chunks: one click adds at most CHUNK
        const seen = onHost.get(node.host) || 0;
        onHost.set(node.host, seen + 1);
        box = `procs:${node.host}:${Math.floor(seen / CHUNK)}`;
      }
      view.groupOf.set(node.name, box);
      if (!members.has(box)) members.set(box, []);
      members.get(box).push(node);
    }
    for (const vm of boxes.values()) {
      const inside = members.get(`vm:${vm.name}`) || [];
      elements.push({ group: "nodes", data: { id: `vm:${vm.name}`, label: topology.collapsed ? `${vm.name} (${inside.length})` : vm.name,
        kind: "vm", parent: `host:${vm.host}`, ...extent(inside) }, classes: topology.collapsed ? "group" : "", ...vmAt(vm) });
    }
    if (topology.collapsed) {
      for (const [id, procs] of members) {
        if (!id.startsWith("procs:")) continue;
        const host = procs[0].host;
        const first = Number(id.slice(id.lastIndexOf(":") + 1)) * CHUNK + 1;
        const group = { group: "nodes", data: { id, label: `nodes ${first}–${first + procs.length - 1}`,
          kind: "group", parent: `host:${host}`, ...extent(procs) }, classes: "group" };
        if (procs.every((n) => Number.isFinite(n.px))) {     // the centre of where its nodes will go
          group.position = { x: procs.reduce((sum, n) => sum + n.px, 0) / procs.length,
            y: procs.reduce((sum, n) => sum + n.py, 0) / procs.length };
        }
        elements.push(group);
      }
    } else {
      for (const node of topology.nodes) elements.push(ptopoLeaf(node));
    }
    view.members = members;
    return elements;
  }

  // a folded box is as big as its nodes will be when unfolded, so the host box keeps its shape on a click
  function extent(nodes) {
    const placed = nodes.filter((n) => Number.isFinite(n.px));
    if (!placed.length) return { w: 40, h: 24, fs: 11 };
    const xs = placed.map((n) => n.px), ys = placed.map((n) => n.py);
    const w = Math.max(40, Math.max(...xs) - Math.min(...xs) + 30), h = Math.max(24, Math.max(...ys) - Math.min(...ys) + 30);
    return { w, h, fs: Math.max(11, Math.min(w, h) / 6) };
  }

  function vmAt(vm) {
    return Number.isFinite(vm.px) ? { position: { x: vm.px, y: vm.py } } : {};
  }

  function ptopoLeaf(node) {
    const box = view.groupOf.get(node.name);
    const parent = box.startsWith("vm:") ? box : `host:${node.host}`;
    const leaf = { group: "nodes", data: { id: node.name, label: node.name, kind: node.kind,
      parent: view.topology.collapsed ? box : parent } };
    if (Number.isFinite(node.px)) leaf.position = { x: node.px, y: node.py };
    return leaf;
  }

  function drawPtopo(topology) {
    const elements = ptopoElements(topology);
    // compound boxes take their place from their children: only the leaves need positions
    const parents = new Set(elements.map((e) => e.data.parent));
    const leaves = elements.filter((e) => !parents.has(e.data.id));
    const positioned = topology.collapsed ? leaves.every((e) => e.position) : hasPositions(topology.nodes, "px", "py");
    const layout = positioned ? { name: "preset", fit: true, padding: 20 } : fallbackLayout(elements.length, true);
    return pane($("ptopo"), elements, layout, elements.length > LARGE);
  }

  function expand(groupId) {                      // a collapsed group box: add its nodes inside it
    const cy = view.ptopo;
    const group = cy.getElementById(groupId);
    if (!group.length || group.data("expanded")) return;
    group.data("expanded", true);
    group.removeClass("group");
    const added = cy.add((view.members.get(groupId) || []).map(ptopoLeaf));
    if (!added.every((n) => n.position("x") !== 0 || n.position("y") !== 0)) {
      const box = group.boundingBox();
      added.layout({ name: "grid", boundingBox: { x1: box.x1, y1: box.y1, w: Math.max(200, Math.sqrt(added.length) * 40),
        h: Math.max(120, Math.sqrt(added.length) * 40) }, fit: false }).run();
    }
  }

  function ptopoOf(name) {                        // the ptopo element standing for a node now (itself or its group)
    const own = view.ptopo.getElementById(name);
    return own.length ? own : view.ptopo.getElementById(view.groupOf.get(name) || "");
  }

  // -- hover and select across the panes ------------------------------------------------------------------------
  function counterpart(element) {
    const name = element.id();
    if (element.cy() === view.vtopo) return element.isNode() && !name.startsWith("lan:") ? ptopoOf(name) : null;
    return element.data("kind") === "host" || element.data("kind") === "vm" || element.hasClass("group") ? null
      : view.vtopo.getElementById(name);
  }

  function figures(index) {                       // a link's label while hovered: its name and what it carries
    const link = view.topology.links[index];
    const style = linkStyle(index);
    if (style.state === "down") return `${link.name}: down`;
    if (!style.rate) return `${link.name}: idle`;
    const use = link.bandwidth ? ` (${Math.round(100 * utilization(link, style.rate))} %)` : "";
    return `${link.name}: ${kbits(style.rate)}${use}, ${style.attack || 0} % attack`;
  }

  function wirePane(cy) {
    cy.on("mouseover", "edge", (event) => event.target.data("label", figures(event.target.data("link"))));
    cy.on("mouseover", "node, edge", (event) => {
      event.target.addClass("lit");
      const other = counterpart(event.target);
      if (other) other.addClass("lit");
    });
    cy.on("mouseout", "node, edge", (event) => {
      event.target.removeClass("lit");
      const other = counterpart(event.target);
      if (other) other.removeClass("lit");
    });
    cy.on("tap", "node", (event) => {
      const target = event.target;
      if (target.hasClass("group") || (view.topology.collapsed && target.data("kind") === "vm" && !target.data("expanded"))) {
        expand(target.id());
        return;
      }
      if (target.id().startsWith("lan:")) selectLink(target.data("link"));
      else if (["host", "vm"].includes(target.data("kind"))) return;
      else selectNode(target.id());
    });
    cy.on("tap", "edge", (event) => selectLink(event.target.data("link")));
  }

  function clearSelection() {
    view.vtopo.elements().unselect();
    view.ptopo.elements().unselect();
    document.querySelectorAll("#node-list li.selected").forEach((li) => li.classList.remove("selected"));
  }

  function selectNode(name) {
    if (!view.topology.nodes.some((n) => n.name === name)) return;
    clearSelection();
    const group = view.groupOf.get(name);
    if (view.topology.collapsed && group) expand(group);
    const here = view.vtopo.getElementById(name);
    here.select();
    ptopoOf(name).select();
    view.vtopo.animate({ center: { eles: here } }, { duration: 150 });
    const item = document.querySelector(`#node-list li[data-node="${CSS.escape(name)}"]`);
    if (item) { item.classList.add("selected"); item.scrollIntoView({ block: "nearest" }); }
    view.selected = { node: name };         // an answer for an older selection is dropped
    showNode(name);
  }

  function selectLink(index) {
    clearSelection();
    view.linkEdges[index].select();
    const hub = view.vtopo.getElementById(`lan:${view.topology.links[index].name}`);
    if (hub.length) hub.select();
    showLink(index);
  }

  // -- the node list ------------------------------------------------------------------------------------------------
  function drawList(topology) {
    const list = $("node-list");
    const items = document.createDocumentFragment();
    for (const node of topology.nodes) {
      const where = node.vm && node.vm !== node.name ? `${node.host} / ${node.vm}` : node.host;
      items.append(el("li", { "data-testid": "node-item", "data-node": node.name, onclick: () => selectNode(node.name) },
        el("span", { class: "name", text: node.name }), " ", el("small", { text: `${node.kind} on ${where}` })));
    }
    list.replaceChildren(items);
    const search = $("search");
    search.addEventListener("input", () => {
      const wanted = search.value.trim().toLowerCase();
      for (const li of list.children) li.hidden = wanted !== "" && !li.dataset.node.toLowerCase().includes(wanted);
    });
    search.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      const first = [...list.children].find((li) => !li.hidden);
      if (first) selectNode(first.dataset.node);
    });
  }

  // -- plots ---------------------------------------------------------------------------------------------------------
  function markers(u) {                           // scenario and node events as vertical lines on every plot
    const ctx = u.ctx;
    const [lo, hi] = [u.scales.x.min, u.scales.x.max];
    ctx.save();
    ctx.strokeStyle = "#805ad5";
    ctx.fillStyle = "#553c9a";
    ctx.font = `${10 * devicePixelRatio}px sans-serif`;
    u.markers = 0;
    let labelledUpTo = -Infinity;            // a label only where the previous one has ended
    for (const event of view.events) {
      if (event.created < lo || event.created > hi) continue;
      u.markers += 1;
      const x = Math.round(u.valToPos(event.created, "x", true));
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      if (x > labelledUpTo) {
        ctx.fillText(event.name, x + 3, u.bbox.top + 10 * devicePixelRatio);
        labelledUpTo = x + ctx.measureText(event.name).width + 8;
      }
    }
    ctx.restore();
  }

  function plot(container, labels, colours, data) {
    return new uPlot({
      width: Math.max(240, container.clientWidth - 8), height: 150,
      series: [{}, ...labels.map((label, i) => ({ label, stroke: colours[i], width: 1.5,
        value: (u, v) => (v === null || v === undefined ? "–" : kbits(v)) }))],
      axes: [{}, { size: 48, label: "bit/s", labelSize: 14, values: (u, ticks) => ticks.map(tick) }],
      scales: { y: { range: (u, min, max) => [0, Math.max(8, max * 1.1)] } },
      hooks: { draw: [markers] }, legend: { live: true },
    }, data, container);
  }

  // -- the panel: a node --------------------------------------------------------------------------------------------
  // Each panel shown has a generation: an answer or a timer of an older panel finds it is not current and stops
  // (two quick selections must not leave a timer behind that clears the newer panel's).
  let panelGeneration = 0;
  let panelTimer = null;
  function newPanel() {
    if (panelTimer) clearInterval(panelTimer);
    panelTimer = null;
    view.panelPlot = null;
    panelGeneration += 1;
    return panelGeneration;
  }
  const current = (generation) => generation === panelGeneration;

  async function showNode(name) {
    const generation = newPanel();
    const panel = $("panel");
    panel.replaceChildren(el("h2", { text: name }), el("p", { class: "hint", text: "loading…" }));
    let info;
    try {
      info = await getJSON(`/api/node/${encodeURIComponent(name)}`);
    } catch (error) {
      if (current(generation)) panel.replaceChildren(el("h2", { text: name }), el("p", { class: "error", text: String(error.message) }));
      return;
    }
    if (!current(generation)) return;
    const where = info.vm && info.vm !== name ? `${info.host} / VM ${info.vm}` : info.host;
    const rows = info.interfaces.map((i) => el("tr", {},
      el("td", { text: i.name }), el("td", { text: i.address || "" }), el("td", { text: i.mac || "" }),
      el("td", {}, i.segment ? el("a", { href: "#", text: i.segment, onclick: (e) => {
        e.preventDefault(); const k = view.linkIndex.get(i.segment); if (k !== undefined) selectLink(k);
      } }) : "")));
    const files = Object.entries(info.identity || {}).map(([file, text]) => el("details", { "data-testid": "identity-file", "data-file": file },
      el("summary", { text: file }), el("pre", { text })));
    const plotBox = el("div", { class: "plot", "data-testid": "node-plot" });
    panel.replaceChildren(
      el("h2", { "data-testid": "panel-title", text: name }),
      el("p", { text: `${info.kind} on ${where}` }),
      el("table", { class: "ifaces", "data-testid": "interfaces" },
        el("tr", {}, el("th", { text: "iface" }), el("th", { text: "address" }), el("th", { text: "mac" }), el("th", { text: "link/LAN" })),
        ...rows),
      el("h3", { text: "rates" }), plotBox,
      el("h3", { text: "identity files (/var/emulab/boot)" }), ...files);
    const series = info.series || { t: [], tx: [], rx: [], attack_tx: [], attack_rx: [] };
    const keys = ["tx", "rx", "attack_tx", "attack_rx"];
    const data = [series.t.slice(), ...keys.map((k) => (series[k] || []).slice())];
    const u = plot(plotBox, ["tx", "rx", "attack tx", "attack rx"], ["#2b6cb0", "#38a169", "#d62828", "#dd6b20"], data);
    view.panelPlot = u;
    // polls ask only for what is newer (`since`: the answer is then the series alone)
    let since = data[0].length ? data[0][data[0].length - 1] : Date.now() / 1000 - NODE_WINDOW;
    let asking = false;
    const timer = setInterval(async () => {
      if (!current(generation)) { clearInterval(timer); return; }
      if (asking) return;                     // the previous poll is still out
      asking = true;
      try {
        const more = await getJSON(`/api/node/${encodeURIComponent(name)}?since=${since}`);
        if (!current(generation)) return;
        const s = more.series || { t: [] };
        if (!s.t.length) return;
        s.t.forEach((t, k) => {
          if (t <= since) return;
          data[0].push(t);
          keys.forEach((key, j) => data[j + 1].push((s[key] || [])[k] ?? null));
        });
        since = data[0][data[0].length - 1];
        while (data[0].length && data[0][0] < since - NODE_WINDOW) data.forEach((column) => column.shift());
        u.setData(data);
      } catch (error) { /* the server went away: the live indicator says so */ } finally { asking = false; }
    }, 1000);
    panelTimer = timer;
  }

  // -- the panel: a link or LAN -----------------------------------------------------------------------------------
  function linkSeries(index) {
    const t = [], total = [], attack = [], legit = [];
    for (const frame of view.history) {
      const rate = frame.rate[index];
      t.push(frame.t);
      total.push(rate);
      const a = rate === null ? null : Math.round((rate * (frame.attack[index] || 0)) / 100);
      attack.push(a);
      legit.push(rate === null ? null : rate - a);
    }
    return [t, legit, attack];
  }

  function showLink(index) {
    newPanel();
    const link = view.topology.links[index];
    view.selected = { link: index };
    const message = el("p", { class: "message", "data-testid": "link-message" });
    const bandwidth = el("input", { "data-testid": "link-bandwidth", placeholder: "e.g. 5Mbit", size: 10 });
    const act = async (action, shaping) => {
      message.textContent = `${action}…`;
      try {
        const answer = await fetch(`/api/link/${encodeURIComponent(link.name)}`, { method: "POST",
          credentials: "same-origin", headers: { "Content-Type": "application/json" },
          body: JSON.stringify(shaping ? { action, shaping } : { action }) });
        const text = await answer.text();
        if (!answer.ok) { message.textContent = text.trim(); message.className = "message error"; return; }
        const done = JSON.parse(text);
        link.state = done.state;
        link.pendingSince = Date.now() / 1000;     // frames of samples taken before the change keep this state
        if (done.shaping && "bandwidth" in done.shaping) link.bandwidth = done.shaping.bandwidth;
        message.className = "message ok";
        message.textContent = `${link.name} ${done.state}${done.shaping && done.shaping.bandwidth ? `, ${bits(done.shaping.bandwidth)}` : ""} (${(+done.seconds).toFixed(2)} s)`;
        view.styleKey[index] = "";
        restyle();
        updateLinkPanel();
      } catch (error) {
        message.textContent = `nestbed web: ${error.message}`;
        message.className = "message error";
      }
    };
    const plotBox = el("div", { class: "plot", "data-testid": "link-plot" });
    $("panel").replaceChildren(
      el("h2", { "data-testid": "panel-title", text: link.name }),
      el("p", { text: `${link.kind === "lan" ? "LAN" : "link"}: ${link.members.join(", ")}` }),
      el("dl", {},
        el("dt", { text: "state" }), el("dd", { "data-testid": "link-state" }),
        el("dt", { text: "configured" }), el("dd", { "data-testid": "link-configured" }),
        el("dt", { text: "now" }), el("dd", { "data-testid": "link-rate" }),
        el("dt", { text: "legitimate" }), el("dd", { "data-testid": "link-legit" }),
        el("dt", { text: "attack (DSCP 8)" }), el("dd", { "data-testid": "link-attack" })),
      el("div", { class: "controls" },
        el("button", { "data-testid": "link-down", onclick: () => act("down") , text: "Down" }),
        el("button", { "data-testid": "link-up", onclick: () => act("up"), text: "Up" }),
        bandwidth,
        el("button", { "data-testid": "link-set", text: "Set bandwidth", onclick: () => {
          if (bandwidth.value.trim()) act("set", { bandwidth: bandwidth.value.trim() });
        } })),
      message, el("h3", { text: "traffic" }), plotBox);
    view.panelPlot = plot(plotBox, ["legitimate", "attack"], ["#2b6cb0", "#d62828"], linkSeries(index));
    updateLinkPanel();
  }

  function updateLinkPanel() {
    if (!view.selected || view.selected.link === undefined) return;
    const index = view.selected.link;
    const link = view.topology.links[index];
    const style = linkStyle(index);
    const set = (id, text) => { const node = document.querySelector(`[data-testid="${id}"]`); if (node) node.textContent = text; };
    set("link-state", link.state);
    set("link-configured", bits(link.bandwidth));
    set("link-rate", style.rate === null ? "no counters yet" : `${kbits(style.rate)}${link.bandwidth ? ` (${Math.round(100 * utilization(link, style.rate))} %)` : ""}`);
    const attack = style.rate ? Math.round((style.rate * (style.attack || 0)) / 100) : null;
    set("link-legit", style.rate === null ? "–" : kbits(style.rate - (attack || 0)));
    set("link-attack", style.rate === null ? "–" : `${kbits(attack || 0)} (${style.attack || 0} %)`);
    if (view.panelPlot) view.panelPlot.setData(linkSeries(index));
  }

  // -- the feed ---------------------------------------------------------------------------------------------------
  function onFrame(frame) {
    frame.received = Date.now();
    view.frames += 1;
    view.lastFrame = frame;
    view.history.push(frame);
    if (view.history.length > HISTORY) view.history.shift();
    if (frame.plan && view.topology.plan && frame.plan !== view.topology.plan) {
      location.reload();                        // `nestbed modify` changed the experiment: draw the new one
      return;
    }
    if (frame.linkstate !== undefined && frame.linkstate !== view.topology.linkstate) refreshLinks(frame.linkstate);
    const down = new Set(frame.down);
    view.topology.links.forEach((link, index) => {
      if (link.pendingSince && frame.t < link.pendingSince) return;
      link.pendingSince = 0;
      link.state = down.has(index) ? "down" : "up";
    });
    restyle();
    updateLinkPanel();
    const live = $("live");
    live.textContent = `live · frame ${frame.seq} at ${clock(frame.t)}`;
    live.className = "live";
  }

  // links.json changed (this page's POST, or `nestbed link` from a terminal): the links' shaping as it is now
  let refreshing = false;
  async function refreshLinks(version) {
    if (refreshing) return;
    refreshing = true;
    try {
      const fresh = await getJSON("/api/topology");
      if (fresh.plan !== view.topology.plan) { location.reload(); return; }
      fresh.links.forEach((now, index) => {
        const link = view.topology.links[index];
        link.bandwidth = now.bandwidth;
        if (!link.pendingSince) link.state = now.state;
      });
      view.topology.linkstate = fresh.linkstate || version;
      view.styleKey.fill("");
      restyle();
      updateLinkPanel();
    } catch (error) { /* the next frame tries again */ } finally { refreshing = false; }
  }

  function describeData(data) {
    if (data === null || data === undefined) return "";
    const text = typeof data === "string" ? data : JSON.stringify(data);
    return text.length > 160 ? `${text.slice(0, 157)}…` : text;
  }

  function onEvent(event) {
    if (view.events.length && view.events[view.events.length - 1].id >= event.id) return;
    view.events.push(event);
    const log = $("event-log");
    if (view.events.length > EVENTS_KEPT) {
      view.events.shift();
      if (log.firstChild) log.firstChild.remove();
    }
    log.append(el("li", { "data-testid": "event", "data-id": event.id, "data-source": event.source },
      el("time", { text: clock(event.created) }), " ", el("b", { text: event.source }), " ",
      el("span", { class: "event-name", text: event.name }), " ", el("code", { text: describeData(event.data) })));
    log.lastChild.scrollIntoView({ block: "nearest" });
    if (view.panelPlot) view.panelPlot.redraw(false, false);
  }

  function listen() {
    const stream = new EventSource("/api/stream");
    stream.addEventListener("counters", (message) => onFrame(JSON.parse(message.data)));
    stream.addEventListener("event", (message) => onEvent(JSON.parse(message.data)));
    stream.addEventListener("error", () => {
      const live = $("live");
      live.textContent = "reconnecting…";
      live.className = "stale";
    });
    setInterval(() => {
      if (view.lastFrame && Date.now() - view.lastFrame.received > STALE_MS) $("live").className = "stale";
    }, 1000);
    view.stream = stream;
  }

  // -- start ----------------------------------------------------------------------------------------------------------
  async function start() {
    if (window.cytoscapeFcose) cytoscape.use(window.cytoscapeFcose);
    let topology;
    try {
      topology = await getJSON("/api/topology");
    } catch (error) {
      fail(String(error.message));
      return;
    }
    view.topology = topology;
    const hosts = topology.hosts.length;
    $("summary").textContent = `${topology.nodes.length} nodes, ${topology.links.length} links and LANs, ` +
      `${topology.vms.length} VMs, ${hosts} host${hosts === 1 ? "" : "s"}${topology.collapsed ? " (ptopo folded: click a box)" : ""}`;
    drawList(topology);
    view.vtopo = drawVtopo(topology);
    view.ptopo = drawPtopo(topology);
    wirePane(view.vtopo);
    wirePane(view.ptopo);
    view.selectNode = selectNode;
    view.selectLink = (name) => { const k = view.linkIndex.get(name); if (k !== undefined) selectLink(k); };
    listen();
    view.ready = true;
    document.body.dataset.ready = "true";
  }

  start();
})();
