"""The ``facepii`` command line (Typer). Thin: parse, call the library, print.

User errors (bad path, unknown name, bad parameter) print one line on stderr
and exit with code 2; no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

import attacks as attack_pkg
import defenses as defense_pkg
from attacks import DEFAULT_ATTACKS
from facepii import __version__, outputs, progress
from facepii import datasets as ds
from facepii.commands import FAST_KERNELS_HELP, check_fast_kernels, data_folders, register
from facepii.config import EvaluateConfig
from facepii.errors import FacepiiError, ParameterError
from facepii.option_text import parse_param_options, parse_scores, parse_size
from facepii.pipeline import run
from facepii.plots import transfer_figure
from facepii.report import render
from facepii.transfer import run_transfer, slug

app = typer.Typer(
    name="facepii",
    help="Test how much identity leaks from (protected) face embeddings, and what the "
         "protection costs in recognition accuracy. Exit codes: 0 done (gate: every rule passed), 1 a gate "
         "rule failed, 2 a usage, configuration or input error (one line), 3 an internal error (add --debug "
         "for the traceback), 130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain text: "facepii[dask]" stays as written
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facepii {__version__}")
        typer.echo(f"facepii from  {Path(__file__).resolve().parent}")
        typer.echo(f"defenses from {Path(defense_pkg.__file__).resolve().parent}")
        typer.echo(f"attacks from  {Path(attack_pkg.__file__).resolve().parent}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print facepii's version and the folders its packages (facepii, defenses, attacks) were "
             "imported from, then exit.")] = False,
) -> None:
    """Test how much identity leaks from (protected) face embeddings, and what the protection costs in
    recognition accuracy. Exit codes: 0 done (gate: every rule passed), 1 a gate rule failed, 2 a usage,
    configuration or input error, 3 an internal error (add --debug for the traceback), 130 interrupted."""


def _split(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


@app.command(help="Evaluate protections of face embeddings: reconstruction attacks against every defense "
                  "setting, an independent judge re-identifying the faces, and the utility each setting keeps "
                  "(TAR@FAR, EER, AUC, rank-1), against the unprotected row; every rate with a 95% interval.")
def evaluate(
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", metavar="SPEC",
        help="Faces to test on: celeba:PATH, folder:PATH (one sub-folder per person), lfw[:DATA_HOME], "
             f"embeddings:FILE.npz. Default: ${ds.ENV_VAR} if set, else lfw.")] = None,
    encoder: Annotated[str | None, typer.Option(
        "--encoder", "-e", metavar="NAME",
        help="Face model under test (the target): sface (default), dlib, onnx:PATH. For an "
             "embeddings: dataset, the model that made them (default: precomputed, cosine). "
             "See `facepii encoders`.")] = None,
    defense: Annotated[list[str], typer.Option(
        "--defense", metavar="NAME[,NAME]",
        help="Protections to evaluate, comma-separated or repeated; chain with + "
             "(projection+quantize). The unprotected row is always included. See `facepii defenses`.")] = ["none"],
    param: Annotated[list[str], typer.Option(
        "--param", "-p", metavar="KEY=V1,V2",
        help="Sweep a defense parameter (repeatable; several give their product): sigma=0.02,0.05. "
             "In chains address a step: projection.dim=64.")] = [],
    epsilon: Annotated[list[str], typer.Option(
        "--epsilon", metavar="E1,E2",
        help="Shortcut: add Gaussian-noise rows calibrated to these per-template DP epsilons "
             "(delta 1e-5, Opacus RDP accountant): --epsilon 1,4,16.")] = [],
    max_identities: Annotated[int | None, typer.Option(
        "--max-identities", metavar="N", min=1, help="Seeded sample of N identities.")] = None,
    min_images: Annotated[int, typer.Option(
        "--min-images", metavar="N", min=1,
        help="Keep identities with at least N usable images (verification needs 2).")] = 2,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2 ** 32 - 1,
                                      help="Seed of every random choice; same seed, same report.")] = 0,
    json_out: Annotated[Path | None, typer.Option(
        "--json", metavar="FILE", help="Write the report as JSON (schema facepii.report/1).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", metavar="DIR", help="Embedding cache folder (default: the user cache folder). "
        "It holds biometric templates.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the embedding cache.")] = False,
    executor: Annotated[str, typer.Option(
        "--executor", metavar="local|dask|dask:ADDRESS",
        help="Where photos are embedded and rows evaluated (utility, attacks, judging): local (this process), "
             "dask (a local Dask cluster, one worker per core) or dask:ADDRESS (a running scheduler; photos and "
             "model files must be on a shared filesystem). Needs facepii[dask]. Figures are the same either way "
             "for one --threads.")] = "local",
    max_memory: Annotated[str | None, typer.Option(
        "--max-memory", metavar="SIZE",
        help="Memory for exact impostor scores (default 4GB): all impostor pairs while they fit, else a seeded "
             "sample of 10^7 pairs, the sampling's share of each interval stated in the report.")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", metavar="N", min=1, max=1024,
        help="Threads for the computations behind the figures: torch, BLAS and OpenMP (default: the cores this "
             "process may use: its CPU affinity, e.g. taskset or a batch scheduler's cpuset). Torch's rounding "
             "depends on it: one N gives the same figures in this process and on any Dask worker; the report "
             "records it.")] = None,
    scores: Annotated[str, typer.Option(
        "--scores", metavar="N|all|none",
        help="Score files under --out DIR/scores/ (CSV and bob.measure four-column, for bob.measure or pyeer): "
             "every genuine pair and N impostor pairs per row (a seeded sample past N, which the files say; "
             "all = every pair, none = no files), and the judges' scores behind every privacy figure.")
    ] = "100000",
    attack: Annotated[list[str], typer.Option(
        "--attack", metavar="NAME[,NAME]",
        help="Reconstruction attacks to run against every row (comma-separated); the row reports the "
             "worst. Default: nearest,inverse,decoder,optimize. See `facepii attacks`.")] = [],
    no_privacy: Annotated[bool, typer.Option(
        "--no-privacy", help="Utility only: run no attack.")] = False,
    judge: Annotated[str | None, typer.Option(
        "--judge", metavar="NAME[,NAME...]",
        help="Independent face models that try to re-identify the reconstructions, e.g. "
             "dlib,onnx:model.onnx: the first gives the headline figure, every one is reported and "
             "the 'worst judge' column shows the highest (default: dlib for an sface target, else "
             "sface). The target is always also used as judge (white-box upper bound).")] = None,
    knowledge: Annotated[str, typer.Option(
        "--knowledge", metavar="white|black",
        help="white: the attacker differentiates the target model; black: it can only query it (every query "
             "counted in the report).")] = "white",
    surrogate: Annotated[str | None, typer.Option(
        "--surrogate", metavar="MODEL[,MODEL...]",
        help="With --knowledge black: public face models of the attacker's own (onnx:PATH, sface), which it "
             "differentiates: it maps the stolen templates into their space, optimises through them, then "
             "refines with queries to the target. Never also a judge.")] = None,
    key: Annotated[str, typer.Option(
        "--key", metavar="secret|disclosed|both",
        help="Keyed defenses: is the attacker's key the real one (disclosed, stolen token) or its "
             "own (secret)? both: report each; the disclosed case is the headline.")] = "both",
    budget: Annotated[str, typer.Option(
        "--budget", metavar="quick|standard|thorough",
        help="Attack compute: decoder training steps, fine-tuning, refinement steps, face-space size. "
             "standard fits ~15 min on 2 cores for 4 rows; thorough is stronger (hours on a CPU).")] = "standard",
    victims: Annotated[str | None, typer.Option(
        "--victims", metavar="N|FRACTION",
        help="Victim identities (the rest are the attacker's auxiliary set): a count or a fraction "
             "(default: a quarter, at least 50 where the data allows; with --attacker-data, every identity "
             "with enough photos).")] = None,
    max_aux: Annotated[int, typer.Option(
        "--max-aux", metavar="N",
        help="At most N auxiliary identities for the attacks to train on: a seeded sample when the "
             "dataset has more (large galleries); the victims are unchanged.")] = 1000,
    attacker_data: Annotated[str | None, typer.Option(
        "--attacker-data", metavar="SPEC",
        help="The attacker's own photos (celeba:DIR, folder:DIR or lfw; a large public set) instead of the "
             "evaluated dataset's non-victim identities: the attacks train on them, every identity of --dataset "
             "with enough photos may be a victim (default), and the report says what the attacker trained on. "
             "Photos and people of the victims found there are set aside.")] = None,
    templates_per_victim: Annotated[str, typer.Option(
        "--templates-per-victim", metavar="K[,K...]",
        help="Stolen templates per victim (a breached database often holds several enrolments of one person): "
             "the attacker gets K templates of each victim, from K photos none of which is in the judge's "
             "gallery, and combines them. 1,2,4 reports leakage at each K (table, plot, gate rules at a K); "
             "the first K is the headline. Victims then need K_max + 1 photos.")] = "1",
    prior: Annotated[str, typer.Option(
        "--prior", metavar="eigenfaces|detail|FILE",
        help="The attacker's face prior, which every attack renders faces with: eigenfaces (default: a face "
             "space of the auxiliary photos; reconstructions are blurred composites), detail (the same face space "
             "plus patch detail from the attacker's photos: 4x the sharpness, what a person looks at; matchers' "
             "figures within a victim or two of eigenfaces, lower on some rows, so not the default), or a FILE "
             "from `facepii prior train` (refused when trained on a victim's photo). Trained on the auxiliary "
             "split and cached.")] = "eigenfaces",
    device: Annotated[str, typer.Option(
        "--device", metavar="cpu|cuda", help="Where the attacks train (cuda where available).")] = "cpu",
    oracle: Annotated[str, typer.Option(
        "--oracle", metavar="none|score|decision",
        help="Also attack through the matcher's answers, never seeing the victim's template (encrypted "
             "templates still leak this way): score = the matcher returns a similarity score for a probe "
             "(score-solver), decision = only accept/reject at its FMR 1e-3 threshold (decision-search); "
             "`facepii oracles` lists them with plug-ins. Reported per row with the queries each victim "
             "took.")] = "none",
    oracle_queries: Annotated[int | None, typer.Option(
        "--oracle-queries", metavar="N", help="Oracle queries per victim (default: 200 score, 2000 decision).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR",
        help="Write report.json, report.md, tradeoff.png and reconstructions.png here. Reconstructions "
             "and victim photos are personal data: they are written only here.")] = None,
    bootstrap: Annotated[int, typer.Option(
        "--bootstrap", metavar="N", min=100,
        help="Bootstrap replicates for the 95% intervals of utility and other means (rates over victims "
             "take mid-p intervals, no replicates).")] = 1000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    fast_kernels: Annotated[bool, typer.Option("--fast-kernels", help=FAST_KERNELS_HELP)] = False,
) -> None:
    """``facepii evaluate``: the options into one EvaluateConfig, then :func:`facepii.pipeline.run`."""
    progress.set_enabled(not quiet)
    check_fast_kernels(fast_kernels)
    if no_privacy and attack:
        raise ParameterError("--attack has no effect with --no-privacy (utility only): drop one of the two.")
    n_scores = parse_scores(scores)  # checked even without --out: a typo is said, not ignored
    cfg = EvaluateConfig.from_options(
        where="evaluate", dataset=dataset or ds.default_spec(), encoder=encoder,
        defenses=_split(defense) or ["none"], params=parse_param_options(param), max_identities=max_identities,
        min_images=min_images, seed=seed, cache_dir=str(cache_dir) if cache_dir else None, no_cache=no_cache,
        max_memory=None if max_memory is None else parse_size(max_memory), executor=executor,
        scores=n_scores if out else 0, threads=threads, bootstrap=bootstrap,
        epsilons=[_number(e, "--epsilon") for e in _split(epsilon)],
        attacks=[] if no_privacy else (_split(attack) or list(DEFAULT_ATTACKS)), judge=judge,
        knowledge=knowledge, surrogate=surrogate, key=key, budget=budget, victims=_victims(victims), max_aux=max_aux,
        device=device, templates_per_victim=templates_per_victim, prior=prior, attacker_data=attacker_data,
        oracle=oracle, oracle_queries=oracle_queries,
    ).validate()
    # every output path is checked before the long work starts
    if json_out:
        outputs.check_output_file(json_out, "--json", out)
    if out:
        outputs.check_out_dir(out, dataset=data_folders(cfg))
    if cache_dir and not no_cache:
        outputs.check_cache_dir(cache_dir)
    targets = list(cfg.specs.targets)
    if len(targets) > 1:
        _transfer(cfg, targets, out, json_out)
        return
    evaluation = run(cfg)
    _print_report(evaluation.report)
    if json_out:
        outputs.write_json(evaluation.report, json_out)
        typer.echo(f"report written to {json_out}")
    if out:
        _write_out(evaluation, out)


def _transfer(cfg, targets: list[str], out: Path | None, json_out: Path | None) -> None:
    """Several targets: each evaluated in turn (the others judge it), then the transfer matrix."""
    if str(cfg.data.dataset or "").startswith("embeddings:"):
        raise ParameterError("--encoder with several models: a transfer matrix needs photos to embed with each model; "
                             "an embeddings file holds one model's vectors.")
    folders = [slug(t) for t in targets]
    if len(set(folders)) < len(folders):
        raise ParameterError(f"--encoder: two targets would share the output folder "
                             f"{next(f for f in folders if folders.count(f) > 1)!r}; copy or rename one model file.")
    if out:
        for f in folders:
            outputs.check_out_dir(Path(out) / f, dataset=data_folders(cfg))
    tr = run_transfer(cfg)
    for t, ev in zip(tr.targets, tr.evaluations):
        typer.echo(f"\n===== target {t} =====")
        _print_report(ev.report)
    typer.echo("\ntransfer matrix (target x judge, unprotected row):")
    typer.echo(tr.table())
    typer.echo(tr.NOTE)
    for n in tr.notes:
        typer.echo(f"note: {n}")
    if json_out:
        outputs.write_text(Path(json_out), tr.to_json())
        typer.echo(f"transfer report written to {json_out}")
    if out:
        for t, ev in zip(tr.targets, tr.evaluations):
            _write_out(ev, Path(out) / slug(t))
        root = Path(out)
        written = [outputs.write_text(root / "transfer.md", tr.markdown()),
                   outputs.write_text(root / "transfer.json", tr.to_json()),
                   outputs.write_figure(transfer_figure(tr), root / "transfer.png")]
        typer.echo(f"written to {out}: " + ", ".join(p.name for p in written))


def _write_out(evaluation, out) -> None:
    paths = outputs.write_outputs(evaluation, out)
    typer.echo(f"written to {out}: " + ", ".join(p.name for p in paths))
    if evaluation.report.has_privacy:
        typer.echo("reconstructions.png and report files show victims' faces: personal data, keep them safe.")


def _print_report(report) -> None:
    typer.echo(render.text(report))


def _victims(text: str | None) -> float | int | None:
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        raise ParameterError(f"--victims {text!r}: give a count (50) or a fraction (0.25).") from None
    if 0 < v < 1:
        return v
    if v >= 2 and v == int(v):
        return int(v)
    raise ParameterError(f"--victims {text!r}: give a count >= 2 or a fraction between 0 and 1.")


def _number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ParameterError(f"{option} {text!r}: expected a number.") from None


register(app)  # gate, lineup, prior, the listings, kernels (facepii.commands)


def _interrupted() -> None:
    typer.echo("\ninterrupted: finished embeddings are cached; run again to resume.", err=True)
    sys.exit(130)


def main() -> None:
    """Entry point. Exit codes: 0 done, 1 a gate rule failed, 2 a user error (one line on stderr),
    3 an internal error (one line; ``--debug`` anywhere on the command line shows the traceback),
    130 interrupted."""
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv.remove("--debug")
    try:
        rc = app(standalone_mode=False)
        if rc == 130:  # Typer turns Ctrl-C into a silent return code 130
            _interrupted()
        if isinstance(rc, int) and rc:
            sys.exit(rc)  # typer.Exit(n) comes back as a return value without standalone mode
    except FacepiiError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # usage errors: one line, exit 2
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()
            else:
                cmd = getattr(getattr(exc, "ctx", None), "command_path", "facepii")
                typer.echo(f"error: {exc.format_message()} (see {cmd} --help)", err=True)
            sys.exit(2)
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(f"internal error: {type(exc).__name__}: {first[:300]} (a bug in facepii, not in your input; "
                   "rerun with --debug for the traceback and report it)", err=True)
        sys.exit(3)
