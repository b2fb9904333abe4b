"""TEST-ONLY webui extension (copied into the webui copy by test_a1111_real.py, never shipped): an API route
that runs the webui's own "Send to img2img" wiring on the UI the server built, and reports what it copies.

In API mode the webui still builds its UI once (modules/api/api.py calls ui.create_ui()), registering every
script's infotext fields (``infotext_utils.paste_fields``) and the txt2img gallery's "Send to img2img" binding
(``source_tabname="txt2img"``, the txt2img scripts' ``paste_field_names``; modules/ui_common.py). The route
re-runs ``infotext_utils.connect_paste_params_buttons`` for that one binding in a fresh gradio Blocks, calls
the function it wired with the txt2img UnlearnKit panel showing the posted values, and returns what reached
each img2img panel control.
"""
from modules import script_callbacks


def send_to_img2img(values: dict) -> dict:
    import gradio as gr
    from modules import infotext_utils

    from unlearnkit.webui import controls

    binding = next(b for b in infotext_utils.registered_param_bindings
                   if b.source_tabname == "txt2img" and b.tabname == "img2img")
    saved = list(infotext_utils.registered_param_bindings)
    infotext_utils.registered_param_bindings[:] = [binding]
    try:
        with gr.Blocks() as blocks:
            infotext_utils.connect_paste_params_buttons()
    finally:
        infotext_utils.registered_param_bindings[:] = saved
    names = {controls.paste_name(n): n for n in values}
    fields = {tab: infotext_utils.paste_fields[tab]["fields"] for tab in ("txt2img", "img2img")}
    panel = {tab: {f.component._id: names[f.label] for f in found if f.label in names}
             for tab, found in fields.items()}
    copied = {}
    for dependency, block_fn in zip(blocks.dependencies, blocks.fns):
        if dependency["inputs"] and dependency["outputs"] and block_fn.fn is not None:
            shown = [values.get(panel["txt2img"].get(i)) for i in dependency["inputs"]]
            outputs = block_fn.fn(*shown)
            copied.update({panel["img2img"][o]: v for o, v in zip(dependency["outputs"], outputs)
                           if o in panel["img2img"]})
    return {"copied": copied, "paste_field_names": binding.paste_field_names}


def on_app_started(_demo, app) -> None:
    def route(values: dict) -> dict:  # a dict parameter: FastAPI reads it from the JSON body
        return send_to_img2img(values)

    app.add_api_route("/unlearnkit-test/send-to-img2img", route, methods=["POST"])


script_callbacks.on_app_started(on_app_started)
