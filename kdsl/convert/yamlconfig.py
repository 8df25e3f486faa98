"""torchdistill YAML, read by a safe loader that knows torchdistill's tags and never imports or
calls what they name: ``!join`` and ``!pathjoin`` of plain strings are joined (pure string work);
every other known tag becomes a :class:`Tagged` value the converter can look at. An unknown tag is
a located error (KD763). PyYAML is an optional dependency (``pip install 'kdsl[convert]'``).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Dict

from kdsl.convert.pyconfig import Located
from kdsl.convert.report import config_error

# torchdistill/common/yaml_util.py's tags
KNOWN_TAGS = ("!join", "!pathjoin", "!expanduser", "!abspath", "!import_get", "!import_mod",
              "!import_call", "!import_call_method", "!getattr", "!access_by_index_or_key")


@dataclass(frozen=True)
class Tagged:
    """A tagged node kept as data: ``!import_call {key: torchvision.datasets.CIFAR10, ...}``."""

    tag: str
    value: Any

    @property
    def key(self) -> Any:
        """The ``key`` (the dotted name) an import tag refers to, when it has one."""
        return self.value.get("key") if isinstance(self.value, dict) else None


def load_yaml(text: str, file: str) -> Located:
    """The YAML document as Located mappings (each key's line kept); raises a located KdslError
    for YAML that does not parse, an unknown tag, or a top level that is not a mapping."""
    try:
        import yaml
    except ImportError:
        raise config_error("KD766", "reading torchdistill YAML needs PyYAML, which is not "
                           "installed", hint="pip install 'kdsl[convert]' (or pip install pyyaml)"
                           ) from None
    loader_class = _loader_class(yaml, file)
    try:
        data = yaml.load(text, Loader=loader_class)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = (file, mark.line + 1) if mark else None
        code = "KD763" if "could not determine a constructor" in str(exc.problem) else "KD760"
        message = (f"unknown YAML tag {exc.problem.split()[-1]}" if code == "KD763"
                   else f"the YAML does not parse: {exc.problem}")
        raise config_error(code, message, where, column=(mark.column + 1) if mark else 1,
                           hint=f"known tags: {', '.join(KNOWN_TAGS)}" if code == "KD763" else None,
                           sources={file: text}) from None
    except yaml.YAMLError as exc:
        raise config_error("KD760", f"the YAML does not parse: {exc}", (file, 1)) from None
    if not isinstance(data, dict):
        raise config_error("KD760", "the YAML's top level is not a mapping", (file, 1),
                           sources={file: text})
    return data


def _loader_class(yaml, file: str):
    class ConfigLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node) -> Located:
        loader.flatten_mapping(node)
        out = Located(where=(file, node.start_mark.line + 1))
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise config_error("KD760", "a mapping key must be a plain value",
                                   (file, key_node.start_mark.line + 1),
                                   column=key_node.start_mark.column + 1)
            out[key] = loader.construct_object(value_node, deep=True)
            out.key_where[key] = (file, key_node.start_mark.line + 1)
        return out

    def tagged(loader, node) -> Any:
        value = _plain(loader, node)
        if node.tag in ("!join", "!pathjoin") and isinstance(value, list) and \
                all(isinstance(v, (str, int, float)) for v in value):
            parts = [str(v) for v in value]
            return "".join(parts) if node.tag == "!join" else posixpath.join(*parts)
        return Tagged(node.tag, value)

    ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for tag in KNOWN_TAGS:
        ConfigLoader.add_constructor(tag, tagged)
    return ConfigLoader


def _plain(loader, node) -> Any:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return _mapping_of(loader, node)
    if isinstance(node, yaml.SequenceNode):
        return [loader.construct_object(n, deep=True) for n in node.value]
    return loader.construct_scalar(node) or None


def _mapping_of(loader, node) -> Dict[Any, Any]:
    loader.flatten_mapping(node)
    return {loader.construct_object(k, deep=True): loader.construct_object(v, deep=True)
            for k, v in node.value}
