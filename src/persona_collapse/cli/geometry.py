"""``pcollapse geometry``: persona clouds in the hidden states of a local model and its adapters."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from persona_collapse.cli._app import (
    ForceOpt,
    FormatOpt,
    SeedOpt,
    app,
    check_format,
    interruptible,
    print_json,
    stdout_console,
)
from persona_collapse.core.errors import UserError

if TYPE_CHECKING:  # imported where used, so help screens stay fast
    from persona_collapse.backends.hidden_states import Variant
    from persona_collapse.report.geometry import GeometryAnalysis

STATES_DIR = "states"
"""Sub-folder of ``--output`` holding one ``.npz`` of hidden states per variant."""


def _variants(base_name: str, adapters: list[str]) -> list[Variant]:
    from persona_collapse.backends.hidden_states import Variant

    variants = [Variant(base_name)]
    for pair in adapters:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UserError(f"--adapter expects NAME=PATH, got {pair!r}")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise UserError(f"--adapter: name {name!r} may hold only letters, digits, - and _")
        variants.append(Variant(name.strip(), path.strip()))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise UserError(f"variant names must be unique (the base is {base_name!r}), got {names}")
    return variants


def _band(text: str) -> tuple[str, int, int]:
    lo, sep, hi = text.partition("-")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit() or int(lo) > int(hi):
        raise UserError(f"--band expects LO-HI layer numbers with LO <= HI, got {text!r}")
    if int(lo) < 1:
        raise UserError(f"--band: layers start at 1 (0 is the embeddings), got {text!r}")
    return f"{int(lo)}-{int(hi)}", int(lo), int(hi) + 1


def _num(value: float, digits: int) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def _summary_table(analysis: GeometryAnalysis) -> Table:
    table = Table(
        title=(
            f"Persona geometry ({analysis.personas} personas, {analysis.templates} templates; "
            "last layer)"
        ),
        title_justify="left",
    )
    for col in ("variant", "PR", "PR unit", "clumpiness", "bimodality", "RDM ρ", "offset/r"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for v, s in analysis.summaries.items():
        table.add_row(
            v,
            _num(s.participation_ratio[-1], 2),
            _num(s.participation_ratio_unitnorm[-1], 2),
            _num(s.clumpiness[-1], 3),
            _num(s.distance_bimodality[-1], 3),
            _num(s.rdm_spearman_vs_base[-1], 3),
            _num(s.offset_over_base_radius[-1], 3),
        )
    if analysis.excess is not None:
        for b in analysis.excess.bands:
            table.add_row(
                f"excess {b.name} [{b.lo}, {b.hi})",
                f"{b.excess_pp:+.2f} pp",
                f"[{b.ci_lo:+.2f}, {b.ci_hi:+.2f}]",
                "significant" if b.significant else "",
            )
    return table


@app.command(name="geometry", rich_help_panel="Variants")
def geometry_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Base model: folder or Hub id.")],
    output: Annotated[
        Path, typer.Option("--output", "-O", help="Folder for states, CSV files and figures.")
    ],
    adapter: Annotated[
        list[str] | None,
        typer.Option(help="PEFT adapter variant NAME=PATH (repeatable; swapped on one model)."),
    ] = None,
    base_name: Annotated[str, typer.Option(help="Name of the adapter-free variant.")] = "base",
    treatment: Annotated[
        str | None, typer.Option(help="Variant whose excess ΔPR is measured.")
    ] = None,
    control: Annotated[str | None, typer.Option(help="Control variant of the excess.")] = None,
    personas: Annotated[
        str, typer.Option(help="Persona set: 'default', 'toxic' or a file.")
    ] = "default",
    limit: Annotated[int | None, typer.Option(help="Only the first N personas.", min=2)] = None,
    templates: Annotated[
        int, typer.Option(help="Persona-only templates used (of the built-in ones).", min=1)
    ] = 4,
    batch_size: Annotated[int, typer.Option(help="Most prompts per forward pass.", min=1)] = 8,
    max_batch_tokens: Annotated[
        int | None, typer.Option(help="Most padded tokens per forward pass.", min=1)
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, mps or auto.")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32, bfloat16, float16 or auto.")] = None,
    device_map: Annotated[
        str | None, typer.Option(help="Spread a large model over devices (e.g. 'auto').")
    ] = None,
    local_files_only: Annotated[
        bool, typer.Option("--local-files-only", help="Never use the network.")
    ] = False,
    draws: Annotated[int, typer.Option(help="Paired subsamples of the excess CIs.", min=2)] = 60,
    fraction: Annotated[float, typer.Option(help="Share of personas per subsample.")] = 0.8,
    bootstrap: Annotated[
        bool, typer.Option("--bootstrap", help="Resample personas with replacement instead.")
    ] = False,
    band: Annotated[
        list[str] | None,
        typer.Option(help="Also report the mean excess over layers LO-HI (inclusive; repeatable)."),
    ] = None,
    seed: SeedOpt = 0,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Write PNGs.")] = True,
    fmt: FormatOpt = "table",
    force: ForceOpt = False,
) -> None:
    """Hidden-state geometry of persona-only prompts: base model plus PEFT adapters.

    Collects the final-token state at every layer (resumable: run again to continue),
    then writes layer_summary.csv, pr_saturation.csv, resolution_floor.csv, excess.csv,
    excess_bands.csv and PNG curves against layer into --output.
    """
    from persona_collapse.backends.hidden_states import (
        PERSONA_TEMPLATES,
        StateReader,
        collect_variants,
        finished_states,
        load_states,
    )
    from persona_collapse.core.files import claim_output_dir
    from persona_collapse.core.personas import get_persona_set
    from persona_collapse.report.geometry import analyse_geometry, write_geometry_outputs

    out_format = check_format(fmt)
    if templates > len(PERSONA_TEMPLATES):
        raise UserError(f"--templates: at most {len(PERSONA_TEMPLATES)}, got {templates}")
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"--fraction must be in (0, 1], got {fraction}")
    bands = [_band(text) for text in band or []]
    variants = _variants(base_name, adapter or [])
    names = {v.name for v in variants}
    for role, name in (("--treatment", treatment), ("--control", control)):
        if name is not None and name not in names:
            raise UserError(f"{role}: unknown variant {name!r}; known: {', '.join(sorted(names))}")
    if (treatment is None) != (control is None):
        raise UserError("--treatment and --control go together")
    persona_set = get_persona_set(personas)
    texts = list(persona_set)[:limit] if limit is not None else list(persona_set)
    if len(texts) < 2:
        raise UserError(f"--personas: at least 2 personas are needed, got {len(texts)}")
    chosen = PERSONA_TEMPLATES[:templates]
    saved = [finished_states(output / STATES_DIR, v, model, texts, chosen) for v in variants]
    with interruptible():
        if all(path is not None for path in saved):
            # Every variant is collected already (a rerun with other analysis options).
            out = claim_output_dir(output, force=force)
            files = {v.name: path for v, path in zip(variants, saved, strict=True) if path}
        else:
            reader = StateReader.load(
                model,
                device=device,
                dtype=dtype,
                device_map=device_map,
                batch_size=batch_size,
                max_batch_tokens=max_batch_tokens,
                local_files_only=local_files_only,
            )
            out = claim_output_dir(output, force=force)
            files = collect_variants(reader, variants, texts, chosen, out / STATES_DIR)
    analysis = analyse_geometry(
        {name: load_states(path) for name, path in files.items()},
        base=base_name,
        treatment=treatment,
        control=control,
        draws=draws,
        fraction=fraction,
        bootstrap=bootstrap,
        bands=bands,
        seed=seed,
    )
    written = write_geometry_outputs(analysis, out, figures=figures)
    if out_format == "json":
        print_json(
            {
                "output": str(out),
                "files": [str(p) for p in written],
                "layers": analysis.layer_frame().to_dict(orient="records"),
                "excess": None if analysis.excess is None else analysis.excess.rows(),
                "bands": (
                    None
                    if analysis.excess is None
                    else analysis.bands_frame().to_dict(orient="records")  # type: ignore[union-attr]
                ),
            }
        )
        return
    console = stdout_console()
    console.print(_summary_table(analysis))
    limited = [v for v, sat in analysis.saturation.items() if sat.near_rank_limit]
    if limited:
        console.print(
            f"note: PR is above 0.9 (N - 1) at layer {analysis.saturation_layer} for "
            f"{', '.join(limited)}: the persona count, not the model, bounds it "
            "(see pr_saturation.csv; use more personas)"
        )
    console.print(f"wrote {len(written)} files to {out}")
