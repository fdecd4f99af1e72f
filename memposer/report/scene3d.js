// memposer report: an interactive 3D view of cameras and sparse points (canvas 2D, no libraries).
// Every <canvas class="mp3d" data-src="ID"> draws the JSON in <script type="application/json" id="ID">:
//   {groups: [{name, color, points: [x,y,z,...], frustums: [[c, p1, p2, p3, p4] flattened, 15 per camera],
//              gt: [same, ground truth]}], ...}, world z up. Drag: orbit; wheel: zoom; double click: reset.
(function () {
  "use strict";
  const EDGES = [[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]];

  function extent(groups) {  // of the cameras: a few far points must not shrink the view
    let r = 1e-6;
    for (const g of groups) {
      for (const arr of [...g.frustums, ...g.gt, g.label]) {
        for (let i = 0; i < arr.length; i++) r = Math.max(r, Math.abs(arr[i]));
      }
    }
    return r;
  }

  function viewer(canvas, data) {
    const ctx = canvas.getContext("2d");
    const home = { yaw: -0.3, pitch: 0.35, zoom: 1.0 };
    const st = Object.assign({}, home);
    const radius = extent(data.groups);

    function project(x, y, z, w, h) {
      // orbit about z (yaw), then tilt about the view's x axis (pitch); camera on the -y' axis
      const cy = Math.cos(st.yaw), sy = Math.sin(st.yaw), cp = Math.cos(st.pitch), sp = Math.sin(st.pitch);
      const x1 = cy * x - sy * y, y1 = sy * x + cy * y;
      const y2 = cp * y1 + sp * z, z2 = -sp * y1 + cp * z;
      const dist = 3.0 * radius, depth = dist + y2;
      if (depth <= 1e-3 * radius) return null;  // behind the viewer
      const f = 0.45 * Math.min(w, h) / radius * (dist / depth) * st.zoom;
      return [w / 2 + f * x1, h / 2 - f * z2];
    }

    function frustums(arr, color, width, w, h) {
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      ctx.beginPath();
      for (const f of arr) {
        const p = [];
        for (let k = 0; k < 5; k++) p.push(project(f[3 * k], f[3 * k + 1], f[3 * k + 2], w, h));
        for (const [a, b] of EDGES) {
          if (p[a] && p[b]) { ctx.moveTo(p[a][0], p[a][1]); ctx.lineTo(p[b][0], p[b][1]); }
        }
      }
      ctx.stroke();
    }

    function draw() {
      const ratio = window.devicePixelRatio || 1;
      const w = canvas.clientWidth, h = canvas.clientHeight;
      if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(0, 0, w, h);
      for (const g of data.groups) {
        ctx.fillStyle = g.color;
        ctx.globalAlpha = 0.55;
        const pts = g.points;
        for (let i = 0; i < pts.length; i += 3) {
          const p = project(pts[i], pts[i + 1], pts[i + 2], w, h);
          if (p) ctx.fillRect(p[0] - 1, p[1] - 1, 2, 2);
        }
        ctx.globalAlpha = 1.0;
        frustums(g.gt, "#444444", 0.8, w, h);
        frustums(g.frustums, g.color, 1.6, w, h);
        const label = project(g.label[0], g.label[1], g.label[2], w, h);
        if (label) {
          ctx.fillStyle = g.color;
          ctx.font = "bold 13px sans-serif";
          ctx.fillText(g.name, label[0], label[1]);
        }
      }
    }

    let drag = null;
    canvas.addEventListener("mousedown", (e) => { drag = [e.clientX, e.clientY]; e.preventDefault(); });
    window.addEventListener("mouseup", () => { drag = null; });
    window.addEventListener("mousemove", (e) => {
      if (!drag) return;
      st.yaw += 0.01 * (e.clientX - drag[0]);
      st.pitch = Math.max(-1.55, Math.min(1.55, st.pitch + 0.01 * (e.clientY - drag[1])));
      drag = [e.clientX, e.clientY];
      draw();
    });
    canvas.addEventListener("wheel", (e) => {
      st.zoom = Math.max(0.2, Math.min(20, st.zoom * Math.exp(-0.001 * e.deltaY)));
      e.preventDefault();
      draw();
    }, { passive: false });
    canvas.addEventListener("dblclick", () => { Object.assign(st, home); draw(); });
    window.addEventListener("resize", draw);
    draw();
  }

  function start() {
    for (const canvas of document.querySelectorAll("canvas.mp3d")) {
      viewer(canvas, JSON.parse(document.getElementById(canvas.dataset.src).textContent));
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
