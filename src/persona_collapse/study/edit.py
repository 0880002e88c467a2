"""Edit a study file in place: write a fine-tuned model id into a variant.

The edit keeps the file's comments and layout where it can (a one-line change of
the variant's ``model:``) and falls back to a full YAML rewrite otherwise; the
result is validated as a study before it replaces the file atomically.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from persona_collapse.core.errors import ConfigError, UnknownNameError, UserError
from persona_collapse.core.yamlio import load_yaml_mapping
from persona_collapse.study.loading import study_from_mapping

logger = logging.getLogger(__name__)


def _study_variant(data: Any, path: Path, family: str, variant: str) -> dict[str, Any]:
    """The variant mapping ``families.<family>.<variant>`` of parsed study data."""
    families = data.get("families") if isinstance(data, dict) else None
    if not isinstance(families, dict):
        raise ConfigError(f"{path}: no 'families' mapping in the study file")
    if family not in families:
        raise UnknownNameError(f"family in {path}:", family, [str(k) for k in families])
    variants = families[family]
    if not isinstance(variants, dict):
        raise ConfigError(f"{path}: field 'families.{family}' must be a mapping of variants")
    if variant not in variants:
        raise UnknownNameError(
            f"variant of family {family!r} in {path}:", variant, [str(k) for k in variants]
        )
    spec = variants[variant]
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: field 'families.{family}.{variant}' must be a mapping")
    if spec.get("persona_file") is not None:
        raise ConfigError(
            f"{path}: variant 'families.{family}.{variant}' imports files (persona_file); "
            "it has no model to set"
        )
    return spec


def check_study_variant(study_file: str | os.PathLike[str], family: str, variant: str) -> None:
    """Check that a study file has a collected variant ``families.<family>.<variant>``.

    Raises:
        InputFileError: The file is missing or not YAML.
        UnknownNameError: No such family or variant (with suggestions).
        ConfigError: The variant imports files instead of naming a model.
    """

    path = Path(study_file)
    _study_variant(load_yaml_mapping(path, what="study"), path, family, variant)


def _mapping_child(node: Any, key: str) -> tuple[Any, Any] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def _count_references(node: Any, target: Any) -> int:
    """How often ``target`` appears in the node tree (aliases share one node object)."""

    seen = 0
    stack = [node]
    visited: set[int] = set()
    while stack:
        current = stack.pop()
        if current is target:
            seen += 1
        if id(current) in visited:
            continue
        visited.add(id(current))
        if isinstance(current, yaml.MappingNode):
            for k, v in current.value:
                stack.extend((k, v))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return seen


def _edit_model_in_place(text: str, family: str, variant: str, value: str) -> str | None:
    """``text`` with ``families.<family>.<variant>.model`` set, other bytes unchanged.

    Uses the positions PyYAML's composer records for each node, so comments and
    formatting survive. None when the layout is too unusual to edit safely.
    """

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return None
    families = _mapping_child(root, "families")
    fam = _mapping_child(families[1], family) if families else None
    var = _mapping_child(fam[1], variant) if fam else None
    if var is None:
        return None
    node = var[1]
    if not isinstance(node, yaml.MappingNode) or not node.value:
        return None
    if _count_references(root, node) != 1:
        return None  # an anchored mapping shared by several variants
    quoted = json.dumps(value, ensure_ascii=False)
    existing = _mapping_child(node, "model")
    if existing is not None:
        value_node = existing[1]
        if not isinstance(value_node, yaml.ScalarNode):
            return None
        start, end = value_node.start_mark.index, value_node.end_mark.index
        if end <= start and value_node.value != "":
            return None
        return text[:start] + quoted + text[end:]
    first_key = node.value[0][0]
    start = first_key.start_mark.index
    if node.flow_style:
        return text[:start] + f"model: {quoted}, " + text[start:]
    line_start = start - first_key.start_mark.column
    if text[line_start:start].strip(" "):
        return None
    newline = "\r\n" if "\r\n" in text else "\n"
    indent = " " * first_key.start_mark.column
    return text[:line_start] + f"{indent}model: {quoted}{newline}" + text[line_start:]


def write_model_id(
    study_file: str | os.PathLike[str], family: str, variant: str, model_id: str
) -> Path:
    """Set ``families.<family>.<variant>.model`` of a study file to ``model_id``.

    The file is edited in place: only the model value changes (or one
    ``model:`` entry is added to the variant), so comments and layout are kept.
    A layout that cannot be edited safely (e.g. a variant defined through a YAML
    anchor shared with others) is rewritten with PyYAML instead, keeping key
    order but dropping comments (a warning is logged). The result is validated
    as a study before it replaces the file (atomically); ``$`` in the id is
    written as ``$$`` (the study file's escape).

    Returns:
        The study file.

    Raises:
        InputFileError: The file is missing or not YAML.
        UnknownNameError: No such family or variant (with suggestions).
        ConfigError: The variant imports files, or the edited study does not validate
            (the file is left unchanged).
    """

    if not isinstance(model_id, str) or not model_id.strip():
        raise ConfigError("model id must be a non-empty string")
    path = Path(study_file)
    data = load_yaml_mapping(path, what="study")
    _study_variant(data, path, family, variant)
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    body = text[len(bom) :]
    value = model_id.replace("$", "$$")

    def written(candidate: str | None) -> Any:
        if candidate is None:
            return None
        try:
            parsed = yaml.safe_load(candidate)
            if _study_variant(parsed, path, family, variant).get("model") == value:
                return parsed
        except (yaml.YAMLError, UserError):
            pass
        return None

    new_body = _edit_model_in_place(body, family, variant, value)
    parsed = written(new_body)
    if new_body is None or parsed is None:
        logger.warning(
            "%s: rewriting the whole study file to set the model of %s/%s (comments are lost)",
            path,
            family,
            variant,
        )
        rewritten = copy.deepcopy(data)
        rewritten["families"][family][variant]["model"] = value
        new_body = yaml.safe_dump(rewritten, sort_keys=False, allow_unicode=True)
        parsed = written(new_body)
        if parsed is None:  # pragma: no cover - safe_dump round-trips plain data
            raise ConfigError(f"{path}: could not set the model of {family}/{variant}")
    root = path.resolve().parent
    try:
        study_from_mapping(parsed, source=str(path), root=root)
    except ConfigError as exc:
        try:
            study_from_mapping(data, source=str(path), root=root)
        except ConfigError as before:
            if str(before) != str(exc):
                raise ConfigError(f"{exc} (the study file was not changed)") from None
            # The file was already invalid in the same way (e.g. an unset ${VAR}).
            logger.warning("%s does not validate as it stands: %s", path, exc)
        else:
            raise ConfigError(f"{exc} (the study file was not changed)") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes((bom + new_body).encode("utf-8"))
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("%s: families.%s.%s.model = %s", path, family, variant, model_id)
    return path


__all__ = ["check_study_variant", "write_model_id"]
