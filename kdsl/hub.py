"""Hugging Face ``transformers`` models built from a config given inline, with no download.

A model reference takes literal options only, so a config object cannot be written in a spec; these
factories build it from keyword options instead::

    student = model("kdsl.hub:hf_causal_lm", config="GPT2Config", n_layer=2, n_embd=64, n_head=2,
                    vocab_size=256, n_positions=64)
    teacher = model("kdsl.hub:hf_model", model="AutoModelForMaskedLM", config="BertConfig",
                    num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                    intermediate_size=128, vocab_size=256) from "bert_teacher.pt"

The weights are random until a ``from "FILE"`` (a state dict, or a ``.safetensors`` file) loads
them; nothing is fetched from the Hub. A pretrained model is read from a local folder (one that
``save_pretrained`` wrote) or from the Hugging Face cache, never downloaded::

    teacher = model("kdsl.hub:hf_pretrained", path="models/llama-1b", dtype="bfloat16")

and its tokenizer (``hf_tokenizer``) from the same place. While models are built for inspection
(``kdsl check``, ``kdsl explain``: :func:`kdsl.core.inspecting.inspecting`) ``hf_pretrained``
builds the model from its config on the meta device: no weights are read. ``transformers`` is imported when one of these is called,
never when kdsl is imported (``pip install transformers``). torchvision and timm models need no
helper: ``torchvision.models:resnet18(weights=None)`` and ``timm:create_model("resnet18",
pretrained=false)`` are references as they are.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional, Sequence

from kdsl.core.diagnostics import error
from kdsl.core.inspecting import inspecting
from kdsl.core.suggest import did_you_mean

__all__ = ["hf_model", "hf_causal_lm", "hf_pretrained", "hf_tokenizer", "local_folder", "DTYPES"]

# the dtypes a pretrained model may be loaded in ("auto": the one its config records)
DTYPES = ("float32", "bfloat16", "float16", "auto")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise error("KD404", f"kdsl.hub needs transformers, which cannot be imported: {exc}",
                    hint="pip install transformers (CPU is enough; nothing is downloaded)") from None
    return transformers


def _class(transformers: Any, name: str, what: str, suffix: str) -> Any:
    cls = getattr(transformers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if cls is None:
        known = [n for n in dir(transformers) if n.endswith(suffix) and not n.startswith("_")]
        raise error("KD508", f"transformers has no {what} '{name}'",
                    hint=did_you_mean(str(name), known) or f"e.g. {known[0] if known else suffix}")
    return cls


def hf_model(config: str = "GPT2Config", model: str = "AutoModel", **options: Any) -> Any:
    """A ``transformers`` model of class ``model`` (an ``AutoModel...`` class, or a model class
    such as ``GPT2LMHeadModel``) built from ``transformers.<config>(**options)``, randomly
    initialised: no file is downloaded. ``options`` are the config's fields (``n_layer=2``...)."""
    transformers = _transformers()
    config_cls = _class(transformers, config, "config class", "Config")
    model_cls = _class(transformers, model, "model class", "Model")
    cfg = config_cls(**options)
    build = getattr(model_cls, "from_config", None)
    # Auto classes build from a config with from_config; a concrete model class takes it directly
    return build(cfg) if callable(build) and model_cls.__name__.startswith("Auto") else model_cls(cfg)


def hf_causal_lm(config: str = "GPT2Config", **options: Any) -> Any:
    """A causal language model (``AutoModelForCausalLM``) from ``transformers.<config>(**options)``,
    randomly initialised, no download: e.g. ``config="GPT2Config", n_layer=2, n_embd=64, n_head=2,
    vocab_size=256``. It returns ``.logits`` (and ``.loss`` when called with ``labels``).
    ``lora_modules=[...]`` (with ``lora_rank``, ``lora_alpha``, ``lora_dropout``) trains LoRA
    adapters on those modules only (:mod:`kdsl.lora`)."""
    from kdsl.lora import LORA_OPTIONS

    lora = {k: options.pop(k) for k in LORA_OPTIONS if k in options}
    return _with_lora(hf_model(config, "AutoModelForCausalLM", **options), **lora)


def _with_lora(model: Any, lora_modules: Optional[Sequence[str]] = None, lora_rank: int = 8,
               lora_alpha: float = 16.0, lora_dropout: float = 0.0) -> Any:
    if lora_modules is None:
        return model
    from kdsl.lora import apply_lora

    return apply_lora(model, lora_modules, lora_rank, lora_alpha, lora_dropout)


def local_folder(path: str, revision: Optional[str] = None) -> str:
    """The local folder of ``path``: a folder itself, or a Hub id's snapshot in the Hugging Face
    cache. Nothing is downloaded: an id that is not cached is KD546, naming it and the offline
    setting."""
    if not isinstance(path, str) or not path:
        raise error("KD313", f"path must be a folder or a Hugging Face model id, got {path!r}")
    folder = os.path.expanduser(path)
    if os.path.isdir(folder):
        return folder
    if not _HUB_ID.match(path) or path.startswith((".", "~")):
        raise error("KD546", f"pretrained model '{path}': no such folder",
                    hint="path= is a folder written by save_pretrained, or a Hugging Face model id "
                    "(org/name) already in the local cache")
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        _transformers()  # huggingface_hub comes with transformers: say how to install it
        raise
    try:
        return snapshot_download(repo_id=path, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError, or a malformed id or revision
        at = f" at revision '{revision}'" if revision else ""
        raise error("KD546", f"pretrained model '{path}'{at} is not a local folder and is not in the "
                    f"Hugging Face cache ({constants.HF_HUB_CACHE}); kdsl never downloads: it reads "
                    "only local files, as with HF_HUB_OFFLINE=1",
                    hint=f"download it once where the network is reachable (hf download {path}), "
                    "or give path= a folder that save_pretrained wrote") from None


def _dtype(dtype: str) -> Any:
    if dtype not in DTYPES:
        raise error("KD313", f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}",
                    hint=did_you_mean(str(dtype), list(DTYPES)) or 'e.g. dtype="bfloat16"')
    import torch

    return "auto" if dtype == "auto" else getattr(torch, dtype)


def hf_pretrained(path: str, dtype: str = "float32", revision: Optional[str] = None,
                  trust_remote_code: bool = False, lora_modules: Optional[Sequence[str]] = None,
                  lora_rank: int = 8, lora_alpha: float = 16.0, lora_dropout: float = 0.0) -> Any:
    """A pretrained causal language model (``AutoModelForCausalLM.from_pretrained``) from a local
    folder or the Hugging Face cache, in ``dtype`` (``"auto"``: the config's). Nothing is
    downloaded (KD546 names an id that is not cached). ``trust_remote_code`` stays off unless
    given: a model whose code lives in its repository is refused by transformers without it.
    For inspection the model is built from its config on the meta device, its weights unread.
    ``lora_modules=[...]`` trains LoRA adapters on those modules only (:mod:`kdsl.lora`)."""
    model = _pretrained(path, dtype, revision, trust_remote_code)
    return _with_lora(model, lora_modules, lora_rank, lora_alpha, lora_dropout)


def _pretrained(path: str, dtype: str, revision: Optional[str], trust_remote_code: bool) -> Any:
    transformers = _transformers()
    torch_dtype = _dtype(dtype)
    folder = local_folder(path, revision)
    auto = transformers.AutoModelForCausalLM
    try:
        if inspecting():
            import torch

            config = transformers.AutoConfig.from_pretrained(
                folder, trust_remote_code=trust_remote_code, local_files_only=True)
            chosen = torch_dtype
            if chosen == "auto":
                chosen = getattr(config, "dtype", None) or torch.float32
                chosen = getattr(torch, chosen) if isinstance(chosen, str) else chosen
            # eager attention: the sdpa path decides on its mask from the mask's values, which meta
            # tensors do not have; the shapes are the same
            with torch.device("meta"):
                model = auto.from_config(config, dtype=chosen, trust_remote_code=trust_remote_code,
                                         attn_implementation="eager")
            # a warning's look at token values (pad ids without a mask) that meta tensors do not have
            for module in model.modules():
                if hasattr(module, "warn_if_padding_and_no_attention_mask"):
                    module.warn_if_padding_and_no_attention_mask = lambda *args, **kwargs: None
            return model
        return auto.from_pretrained(folder, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                    local_files_only=True)
    except (OSError, ValueError) as exc:
        raise error("KD546", f"pretrained model '{path}' cannot be loaded from {folder}: "
                    f"{_first_line(exc)}", hint="the folder needs config.json and the weights "
                    "that save_pretrained writes") from None


def hf_tokenizer(path: str, revision: Optional[str] = None, trust_remote_code: bool = False) -> Any:
    """The tokenizer saved beside a pretrained model (``AutoTokenizer.from_pretrained``), from a
    local folder or the Hugging Face cache; nothing is downloaded."""
    transformers = _transformers()
    folder = local_folder(path, revision)
    try:
        return transformers.AutoTokenizer.from_pretrained(
            folder, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise error("KD546", f"tokenizer '{path}' cannot be loaded from {folder}: {_first_line(exc)}",
                    hint="the folder needs the files that a tokenizer's save_pretrained writes") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
