"""Models by name: the registry, resolution of `--model`, Hub downloads, the cache of
converted checkpoints, and publishing.

registry.py  names -> where the weights live (shipped folder or Hub repo)
refs.py      the shipped default model, Hub repo ids, the `--model` help text
convert.py   the cache of Hub `transformers` checkpoints converted to tfcseg format
download.py  Hub downloads (errors as one line, rich progress), availability of entries
resolve.py   name | Hub id | path -> a local checkpoint folder; `load_model`
export.py    a publishable folder with a model card; upload to the Hub
modelcard.py the model card
"""

from .export import ExportResult, export_checkpoint, push_to_hub
from .refs import MODEL_HELP, SHIPPED_WEIGHTS, default_model_path
from .registry import ModelEntry, list_models, register_model
from .resolve import load_model, model_entry_path, resolve_model_source

__all__ = ["load_model", "resolve_model_source", "model_entry_path", "default_model_path",
           "export_checkpoint", "push_to_hub", "ExportResult", "ModelEntry", "list_models",
           "register_model", "MODEL_HELP", "SHIPPED_WEIGHTS"]
