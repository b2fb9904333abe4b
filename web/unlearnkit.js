// UnlearnKit: draw the text that "Show Text (UnlearnKit)" returns in a read-only box on the node.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

function textBox(node) {
  let widget = node.widgets?.find((w) => w.name === "shown");
  if (!widget) {
    widget = ComfyWidgets.STRING(node, "shown", ["STRING", { multiline: true }], app).widget;
    widget.inputEl.readOnly = true;
    widget.inputEl.style.opacity = 0.85;
    widget.serialize = false; // the text is an output: never saved into widgets_values
  }
  return widget;
}

app.registerExtension({
  name: "UnlearnKit.ShowText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "UnlearnKitShowText") return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const out = created?.apply(this, arguments);
      textBox(this);
      return out;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      executed?.apply(this, arguments);
      textBox(this).value = (message?.text ?? []).join("\n");
      this.setDirtyCanvas?.(true, true);
    };
  },
});
