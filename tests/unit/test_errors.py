"""ComfyUI's refusals become errors that name the node, the input and the fix."""

from __future__ import annotations

from atelier.tools.errors import ComfyExecutionError, ComfyValidationError, MissingModel
from tests import reference


def test_missing_checkpoint_names_file_folder_and_alternatives() -> None:
    body = reference.captures()["txt2img_missing_checkpoint"]["response"]["body"]
    error = ComfyValidationError.from_response(body)
    assert error.error_type == "prompt_outputs_failed_validation"
    [problem] = error.problems
    assert (problem.node_id, problem.class_type, problem.input_name) == ("4", "CheckpointLoaderSimple", "ckpt_name")
    assert problem.missing_model == MissingModel("v1-5-pruned-emaonly.safetensors", "checkpoints", ())
    text = str(error)
    assert "v1-5-pruned-emaonly.safetensors" in text
    assert "ComfyUI/models/checkpoints/" in text
    assert "no checkpoints are installed at all" in text


def test_missing_model_lists_installed_ones_that_would_fit() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
        "node_errors": {"12": {"class_type": "LoraLoader", "dependent_outputs": ["9"], "errors": [{
            "type": "value_not_in_list", "message": "Value not in list", "details": "lora_name: 'x.safetensors'",
            "extra_info": {"input_name": "lora_name", "received_value": "x.safetensors",
                           "input_config": [["a.safetensors", "b.safetensors"], {}]}}]}},
    }
    text = str(ComfyValidationError.from_response(body))
    assert "ComfyUI/models/loras/" in text and "a.safetensors, b.safetensors" in text


def test_out_of_range_names_node_and_input() -> None:
    body = reference.http("validation_error_out_of_range")["response"]
    error = ComfyValidationError.from_response(body)
    [problem] = error.problems
    assert (problem.node_id, problem.input_name, problem.error_type) == ("1", "width", "value_smaller_than_min")
    assert "node 1 (ProbeTextToImage) input 'width': Value 1 smaller than min of 8" in str(error)


def test_missing_link_says_which_node_is_absent() -> None:
    body = reference.http("validation_error_missing_link")["response"]
    error = ComfyValidationError.from_response(body)
    assert "node 9 (SaveImage): links to node 7, which is not in the workflow" in str(error)


def test_unknown_node_and_no_outputs_have_messages_without_node_errors() -> None:
    unknown = ComfyValidationError.from_response(reference.http("unknown_node")["response"])
    assert unknown.error_type == "invalid_prompt" and unknown.problems == []
    assert "NoSuchNode does not exist" in str(unknown) and "#1" in str(unknown)
    no_out = ComfyValidationError.from_response(reference.http("no_output_node")["response"])
    assert no_out.error_type == "prompt_no_outputs" and "Prompt has no outputs" in str(no_out)


def test_execution_error_message_is_one_line_with_node_and_exception() -> None:
    error = ComfyExecutionError("p", "2", "ProbeFail", "RuntimeError", "boom\n", ["line"])
    assert str(error) == "ComfyUI failed in node 2 (ProbeFail): RuntimeError: boom"
    assert error.traceback == ["line"]


def test_every_atelier_error_derives_from_the_one_root_and_is_named_in_it() -> None:
    import importlib
    import inspect
    import pkgutil

    import atelier
    from atelier.tools import errors
    from atelier.tools.errors import AtelierError

    heavy = {"atelier.adapters.crewai", "atelier.adapters.autogen"}  # optional extras: checked where installed
    found: dict[str, type[BaseException]] = {}
    for module in pkgutil.walk_packages(atelier.__path__, "atelier."):
        if module.name in heavy or module.name.endswith("render_worker"):
            continue
        imported = importlib.import_module(module.name)
        for name, value in vars(imported).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.name \
                    and not name.startswith("_"):  # private control flow (e.g. the guard's _TooLarge) is not an error
                found[name] = value
    assert len(found) > 30, sorted(found)
    strays = sorted(name for name, cls in found.items() if not issubclass(cls, AtelierError))
    assert strays == [], f"errors outside the tree rooted in tools/errors.py: {strays}"
    unnamed = sorted(name for name in found if name not in (errors.__doc__ or "") and name != "AtelierError")
    assert unnamed == [], f"tools/errors.py does not say where these live: {unnamed}"
