// Read back what the ComfyUI frontend (LiteGraph canvas) draws; evaluated in the page by comfy_frontend.py.
// Every function returns plain JSON.
({
  constants: () => ({
    version: window.__COMFYUI_FRONTEND_VERSION__ ?? null,
    title: LiteGraph.NODE_TITLE_HEIGHT, slot: LiteGraph.NODE_SLOT_HEIGHT, widget: LiteGraph.NODE_WIDGET_HEIGHT,
    nodeWidth: LiteGraph.NODE_WIDTH, lowQuality: app.canvas._lowQualityZoomThreshold ?? null,
    viewport: [window.innerWidth, window.innerHeight],
  }),

  // minimal size (computeSize) of a fresh node of each type, and its widgets' heights
  typeSizes: (types) => Object.fromEntries(types.map((type) => {
    const n = LiteGraph.createNode(type);
    if (!n) return [type, null];
    const min = n.computeSize();
    const widgets = (n.widgets || []).map((w) => ({
      name: w.name, type: w.type,
      height: w.computeSize ? w.computeSize(min[0])[1]
        : (w.computeLayoutSize ? w.computeLayoutSize(n).minHeight : LiteGraph.NODE_WIDGET_HEIGHT),
    }));
    return [type, { min: [Math.round(min[0]), Math.round(min[1])], widgets,
                    sockets: (n.inputs || []).filter((i) => !i.widget).length,
                    outputs: (n.outputs || []).length }];
  })),

  // every node of the loaded graph as drawn: position, size, minimal size, widgets' offsets
  nodes: () => app.graph._nodes.map((n) => {
    const min = n.computeSize();
    return {
      id: n.id, type: n.type, title: n.title, pos: [...n.pos], size: [...n.size],
      min: [Math.round(min[0]), Math.round(min[1])],
      widgets: (n.widgets || []).map((w) => ({
        name: w.name, y: w.y ?? w.last_y ?? null, visible: n.isWidgetVisible ? n.isWidgetVisible(w) : !w.hidden,
        height: w.computeSize ? w.computeSize(n.size[0])[1]
          : (w.computeLayoutSize ? w.computeLayoutSize(n).minHeight : LiteGraph.NODE_WIDGET_HEIGHT),
      })),
      outputs: (n.outputs || []).map((o) => ({ name: o.name, type: o.type, links: (o.links || []).length })),
    };
  }),

  view: () => ({ scale: app.canvas.ds.scale, offset: [...app.canvas.ds.offset] }),

  // per node: is its title bar (and its body) on screen and not under the frontend's own UI?
  visibility: () => {
    const canvas = app.canvas.canvas;
    const box = canvas.getBoundingClientRect();
    const { scale, offset } = app.canvas.ds;
    const onCanvas = (x, y) => {
      const sx = box.left + (x + offset[0]) * scale, sy = box.top + (y + offset[1]) * scale;
      if (sx < 0 || sy < 0 || sx >= window.innerWidth || sy >= window.innerHeight) return "off screen";
      const el = document.elementFromPoint(sx, sy);
      return el === canvas ? "visible" : `under ${el?.className?.toString().split(" ")[0] || el?.tagName}`;
    };
    const T = LiteGraph.NODE_TITLE_HEIGHT;
    return app.graph._nodes.map((n) => ({
      id: n.id,
      title: [onCanvas(n.pos[0] + 8, n.pos[1] - T / 2), onCanvas(n.pos[0] + n.size[0] - 8, n.pos[1] - T / 2)],
      body: [onCanvas(n.pos[0] + 8, n.pos[1] + n.size[1] - 4),
             onCanvas(n.pos[0] + n.size[0] - 8, n.pos[1] + n.size[1] - 4)],
    }));
  },

  // the template browser's cards: title shown, thumbnail URL and whether it loaded
  templateCards: () => [...document.querySelectorAll("h3")].filter((h) => h.closest("[role=dialog], .p-dialog"))
    .map((h) => {
      const card = h.closest("div.cursor-pointer") || h.parentElement?.parentElement?.parentElement;
      const img = card?.querySelector("img");
      return { title: h.textContent.trim(), img: img?.getAttribute("src") ?? null,
               loaded: img ? img.naturalWidth > 0 : false };
    }),
})
