"""The ``facepii`` commands besides ``evaluate`` (:mod:`facepii.cli`): ``gate``, ``lineup``, ``prior``, the
listings of registered plug-ins and dataset forms, and ``kernels``. :func:`register` adds them to the app.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from tabulate import tabulate

from facepii import datasets as ds
from facepii import gate as g
from facepii import gate_config, kernels, lineup, outputs, progress
from facepii import registry as reg
from facepii.errors import ConfigError, ParameterError
from facepii.pipeline import run
from facepii.priors import describe_file, train_prior
from facepii.report import Evaluation, Report, read_report

_COMMANDS: list[tuple[tuple, dict, Callable]] = []


def _command(*args, **kwargs):
    """Collect a top-level command for :func:`register` (the order here is the order in ``--help``)."""
    def add(f: Callable) -> Callable:
        _COMMANDS.append((args, kwargs, f))
        return f

    return add


def register(app: typer.Typer) -> None:
    """Add these commands and the ``lineup`` and ``prior`` groups to ``app``."""
    for args, kwargs, f in _COMMANDS:
        app.command(*args, **kwargs)(f)
    app.add_typer(lineup_app, name="lineup")
    app.add_typer(prior_app, name="prior")


def data_folders(cfg) -> list[str | None]:
    """The dataset specs whose folders no output may lie in: the evaluated one and the attacker's."""
    return [cfg.data.dataset, cfg.privacy.attacker_data]


FAST_KERNELS_HELP = ("Let torch, oneDNN, MKL, OpenBLAS and OpenCV use this CPU's fastest kernels (AVX-512 where it has "
                     "them) instead of the x86-64 AVX2 level facepii pins by default: faster on such CPUs, but the "
                     "figures may then differ on another CPU type, and the report says so. See `facepii kernels`.")


def check_fast_kernels(fast: bool) -> None:
    """``--fast-kernels`` is acted on by the ``facepii`` command before numpy and torch load
    (:mod:`facepii.launch`); here only checked to have taken effect."""
    if fast and kernels.status().get("pinned"):
        raise ParameterError("--fast-kernels: the kernels were pinned before this command ran (facepii was started "
                             "another way than the `facepii` command); set FACEPII_FAST_KERNELS=1 in the environment.")


@_command(help="Gate a model release or a deployment: evaluate (or read a report), check each rule on the "
                  "pessimistic end of its 95% interval. Exit 0 when every rule passes, 1 when any fails, 2 on a "
                  "usage, configuration or input error, 3 on an internal error (never 1: a crash is not a verdict).")
def gate(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="FILE",
        help="facepii.toml, or a pyproject.toml with [tool.facepii]: an [evaluate] table (the options of "
             "`facepii evaluate`) and a [gate] table (the rules). Default: ./facepii.toml, else "
             "./pyproject.toml.")] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", metavar="FILE", help="Gate this existing report.json instead of running the evaluation.")] = None,
    baseline: Annotated[Path | None, typer.Option(
        "--baseline", metavar="FILE",
        help="An earlier release's report.json: also fail when leakage rose or TAR@1e-3 fell beyond "
             "the 95% intervals.")] = None,
    junit: Annotated[Path | None, typer.Option(
        "--junit", metavar="FILE", help="Write JUnit XML, one test case per rule, for CI systems.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR",
        help="Write report.json/.md/.html (with the verdicts) and the pictures here.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    fast_kernels: Annotated[bool, typer.Option("--fast-kernels", help=FAST_KERNELS_HELP)] = False,
) -> None:
    """``facepii gate``: rules on a report (read, or made by :func:`facepii.pipeline.run`)."""
    progress.set_enabled(not quiet)
    check_fast_kernels(fast_kernels)
    if config is None:
        config = next((p for p in (Path("facepii.toml"), Path("pyproject.toml")) if p.is_file()), None)
        if config is None:
            raise ConfigError("no --config given and no facepii.toml or pyproject.toml here.")
    conf = gate_config.load_config(config)
    has_rules = any(k != "rows" for k in conf["gate"]) or bool(conf["gate"].get("rows"))
    if not has_rules:
        raise ConfigError(f"{config}: the [gate] table holds no rule; rules: {', '.join(g.RULES)}.")
    # report files are read, checked figure by figure (rates within [0, 1], intervals ordered) and their
    # derived fields (worst attack, worst judge) recomputed from the figures, before any rule is judged
    base = Report.from_dict(read_report(baseline), str(baseline)).to_dict() if baseline else None
    cfg = None if report is not None else gate_config.evaluate_config(conf["evaluate"]).validate()
    if junit:
        outputs.check_output_file(junit, "--junit", out)
    if out:
        # as evaluate: never inside the dataset (its next read would take facepii's pictures for photos)
        outputs.check_out_dir(out, dataset=data_folders(cfg) if cfg is not None else None)
    evaluation = rep = None
    if report is not None:
        rep = Report.from_dict(read_report(report), str(report))
        data = rep.to_dict()
    else:
        evaluation = run(cfg)
        rep = evaluation.report
        data = rep.to_dict()
    verdicts = g.run_gate(data, conf["gate"], base)
    for v in verdicts:
        typer.echo(v.line())
    failed = sum(not v.passed for v in verdicts)
    typer.echo(f"\ngate: {len(verdicts) - failed} passed, {failed} failed "
               "(rates judged on the pessimistic end of their 95% interval)")
    if junit:
        outputs.write_junit(verdicts, junit)
        typer.echo(f"JUnit XML written to {junit}")
    if out:
        rep.extra["gate"] = g.verdicts_to_dict(verdicts)
        paths = outputs.write_outputs(evaluation or Evaluation(rep), out)
        typer.echo(f"written to {out}: " + ", ".join(p.name for p in paths))
    if failed:
        raise typer.Exit(1)


lineup_app = typer.Typer(help="Human re-identification study: lineups from a report, a rater page, scoring.",
                         no_args_is_help=True)


@lineup_app.command("build")
def lineup_build(
    report: Annotated[Path, typer.Option(
        "--report", metavar="DIR", help="A report folder written by `facepii evaluate --out DIR` (with attacks).")],
    out: Annotated[Path, typer.Option("--out", metavar="STUDY_DIR", help="Where to write the study (a new folder).")],
    size: Annotated[int, typer.Option("--size", help="Photos per lineup: the victim's and size-1 others.")] = 5,
    trials_per_row: Annotated[int, typer.Option(
        "--trials-per-row", help="Reconstructions shown per report row (defense setting).")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the lineups and their order.")] = 0,
) -> None:
    """Build a lineup study (index.html + assets, works from disk) from a report's reconstructions."""
    s = outputs.build_study(report, out, size, trials_per_row, seed)
    typer.echo(f"study {s['study']}: {s['trials']} trials ({s['attention_checks']} attention checks) over "
               f"{s['rows']} rows, {s['size']} photos per lineup, written to {s['dir']}")
    typer.echo(f"send raters {out}/share.zip (index.html + assets: real faces, treat as personal data); "
               f"keep {out}/key.json: it holds the answers.")


@lineup_app.command("score")
def lineup_score(
    study: Annotated[Path, typer.Argument(metavar="STUDY_DIR", help="The folder `lineup build` wrote.")],
    answers: Annotated[list[Path], typer.Argument(metavar="ANSWERS.json...", help="Raters' downloaded answers.")],
    report: Annotated[Path | None, typer.Option(
        "--report", metavar="DIR", help="Add the human figures to this report folder (privacy.human).")] = None,
    min_attention: Annotated[float, typer.Option(
        "--min-attention", help="Share of attention checks a rater must get right to count.")] = 1.0,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=100, help="Bootstrap replicates.")] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Score a lineup study: per row, human top-1 accuracy with a 95% interval against chance."""
    res = lineup.score_study(study, answers, min_attention, bootstrap, seed)
    typer.echo(f"study {res['study']}: {res['raters']} raters, {res['raters_kept']} kept, "
               f"{len(res['raters_excluded'])} excluded for failing attention checks "
               f"(< {min_attention:.0%} right)")
    typer.echo(lineup.score_table(res))
    typer.echo("human top-1: share of lineups where the rater picked the victim, a \"can't tell\" counted as a "
               "guess (1/size); interval: bootstrap over raters and trials.")
    if report:
        path = outputs.add_human_figures(res, report)
        typer.echo(f"added privacy.human to {path} (and report.md / report.html)")


prior_app = typer.Typer(help="The attacker's face prior: train it once on photos of other people, reuse it "
                             "(facepii evaluate --prior FILE).", no_args_is_help=True)


@prior_app.command("train")
def prior_train(
    dataset: Annotated[str, typer.Option(
        "--dataset", "-d", metavar="SPEC",
        help="The attacker's photos (celeba:PATH, folder:PATH, lfw[:DATA_HOME]): public photos of people who are "
             "NOT the victims. Every usable photo is used.")],
    out: Annotated[Path, typer.Option(
        "--out", metavar="FILE", help="Where to write the prior (safetensors; it holds aligned faces of these "
                                      "photos: personal data).")],
    kind: Annotated[str, typer.Option(
        "--kind", metavar="detail|eigenfaces",
        help="detail (default): a face space plus example-based detail from the photos; eigenfaces: the face "
             "space alone.")] = "detail",
    budget: Annotated[str, typer.Option(
        "--budget", metavar="quick|standard|thorough",
        help="Face-space size and donors of detail (300/1500, 400/3000, 600/6000), matching evaluate's "
             "--budget.")] = "standard",
    max_identities: Annotated[int | None, typer.Option(
        "--max-identities", metavar="N", min=1, help="Seeded sample of N identities.")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2 ** 32 - 1, help="Seed of the sample.")] = 0,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", metavar="DIR", help="Landmark and embedding cache folder (default: the user cache).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")] = False,
    threads: Annotated[int | None, typer.Option("--threads", metavar="N", min=1, max=1024,
                                                help="Threads behind the computation.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    fast_kernels: Annotated[bool, typer.Option("--fast-kernels", help=FAST_KERNELS_HELP)] = False,
) -> None:
    """Train the attacker's face prior on a dataset of photos and write it to a file."""
    progress.set_enabled(not quiet)
    check_fast_kernels(fast_kernels)
    if cache_dir and not no_cache:
        outputs.check_cache_dir(cache_dir)
    d = train_prior(dataset, out, kind=kind, budget=budget, seed=seed, max_identities=max_identities,
                    cache_dir=str(cache_dir) if cache_dir else None, no_cache=no_cache, threads=threads)
    typer.echo(f"prior ({d['kind']}) of {d['photos']} photos of {d['identities']} identities written to {out} "
               f"({d['bytes'] / 1e6:.0f} MB; {d['skipped']} photos skipped; photos {d['seconds']['photos']} s, "
               f"prior {d['seconds']['prior']} s). It holds aligned faces of these photos: personal data.")


@prior_app.command("show")
def prior_show(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A prior written by `facepii prior train`.")],
) -> None:
    """Describe a prior file (checked as `evaluate --prior` checks it)."""
    d = describe_file(file)
    for k, v in d.items():
        typer.echo(f"{k:18} {v}")


def _listing(registry, help_: str) -> Callable[[], None]:
    """A command that lists ``registry``'s entries (name, help line, where a plug-in comes from)."""
    def listing() -> None:
        rows = [(e.name, e.help, "" if e.origin == "built-in" else e.origin) for e in registry.entries()]
        typer.echo(tabulate(rows, headers=["name", "what it is", "from"], tablefmt="plain"))

    listing.__doc__ = help_
    return listing


for _name, _registry, _help in (
        ("encoders", reg.encoders, "List the face encoders (targets and judges)."),
        ("defenses", reg.defenses, "List the embedding protections."),
        ("attacks", reg.attacks, "List the reconstruction attacks."),
        ("oracles", reg.oracles, "List the oracle attacks (--oracle): the matcher's answers, never the victim's "
                                 "template.")):
    _command(_name)(_listing(_registry, _help))


@_command("kernels")
def kernels_cmd(
    env: Annotated[bool, typer.Option(
        "--env", help="Print `export` lines that start another process (a Dask worker of your cluster) at the "
                      "same level, e.g. `eval \"$(facepii kernels --env)\"; dask worker ADDRESS`.")] = False,
    fast_kernels: Annotated[bool, typer.Option("--fast-kernels", help=FAST_KERNELS_HELP)] = False,
) -> None:
    """Show the instruction-set level the figures are computed at: facepii pins torch, oneDNN, MKL, OpenBLAS
    and OpenCV to x86-64 AVX2 before they load, so the same inputs give the same figures on any x86-64 CPU."""
    if env:
        lines = kernels.env_lines() if not fast_kernels else [f"export {kernels.OPT_OUT}=1"]
        typer.echo("\n".join(lines) if lines else "# nothing to pin on this CPU")
        return
    st = kernels.status()
    typer.echo(st["note"])
    for k in ("torch", "openblas", "onednn_max_isa", "mkl_cbwr", "opencv_not_used", "onnxruntime"):
        v = st.get(k)
        typer.echo(f"  {k:16} {', '.join(v) if isinstance(v, list) else v}")
    typer.echo(f"comparable as:   {kernels.fingerprint(st)}")


@_command()
def datasets() -> None:
    """List the dataset spec forms --dataset takes."""
    rows = [(k + ":", help_) for k, (help_, _) in ds.LOADERS.items()]
    typer.echo(tabulate(rows, headers=["spec", "what it reads"], tablefmt="plain"))
    typer.echo(f"\ndefault: {ds.default_spec()}  (set ${ds.ENV_VAR} to change it)")
