"""`gridwatch edge` subcommands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The edge agent and the technician's detection tools.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """The edge agent and the technician's detection tools."""


@app.command()
def run(
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING.")] = "INFO",
) -> None:
    """Run this node's agent: cameras, detection, outbox, broker link, health, config.

    Settings come from EDGE_* environment variables (on balena: device variables), else
    from a provisioning bundle's gridwatch.env in EDGE_BUNDLE_DIR (default /mnt/boot/gridwatch,
    where a technician's SD card or USB stick puts it)."""
    import logging

    from pydantic import ValidationError

    from edge.settings import load_settings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            typer.echo(f"error: EDGE_{field.upper()}: {error['msg']}", err=True)
        raise typer.Exit(2) from exc
    from edge.agent import Agent

    raise typer.Exit(Agent(settings).run())


@app.command()
def detect(
    source: Annotated[
        str, typer.Option("--source", help="Video file, or an rtsp:// or http:// URL.")
    ],
    model: Annotated[
        str, typer.Option("--model", help="Model profile name, or `motion` for no model.")
    ] = "yolox_nano_416",
    rules: Annotated[
        Path | None, typer.Option("--rules", help="Rule set YAML file or preset name.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for snapshots and the annotated video.")
    ] = None,
    fps: Annotated[
        float, typer.Option("--fps", min=0.1, max=30, help="Frames analysed a second.")
    ] = 5.0,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", min=0.0, max=1.0, help="Score threshold (default: the profile's)."
        ),
    ] = None,
    video: Annotated[
        bool, typer.Option("--video/--no-video", help="Write annotated.mp4 into --out.")
    ] = True,
    duration: Annotated[
        float | None,
        typer.Option("--duration", min=0.1, help="Stop a live stream after this many seconds."),
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option("--model-dir", help="Model cache folder.")
    ] = None,
) -> None:
    """Print a camera's events as JSON lines, to tune zones and rules before deploying."""
    from rich.progress import Progress

    from edge import detect_tool
    from edge.camera import file_info, is_file_source
    from edge.detectors.registry import create_detector
    from edge.errors import CameraError, ModelError
    from firmware_configs.errors import FirmwareConfigError
    from firmware_configs.rules import RuleSet, load_rule_set
    from protocols.config import ModelSpec

    try:
        rule_set = load_rule_set(rules) if rules is not None else RuleSet()
        spec = (
            ModelSpec(backend="motion")
            if model == "motion"
            else ModelSpec(profile=model, score_threshold=threshold)
        )
        detector = create_detector(spec, model_dir)
        if is_file_source(source):
            frames = file_info(source)[0]
    except (FirmwareConfigError, ModelError, CameraError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    video_path = out / "annotated.mp4" if out is not None and video else None
    pipeline = detect_tool.build_pipeline(
        rule_set, detector, fps=fps, model=spec, to_datetime=detect_tool.clock_for(source)
    )
    writer = detect_tool.EventWriter(sys.stdout, out)
    if is_file_source(source):
        with Progress(transient=True, console=_stderr_console()) as progress:
            task = progress.add_task("analysing", total=frames)
            analysed = detect_tool.run_file(
                source,
                pipeline,
                writer,
                video_path=video_path,
                progress=lambda index: progress.update(task, completed=index + 1),
            )
    else:
        analysed = detect_tool.run_stream(
            source, pipeline, writer, duration_s=duration, video_path=video_path
        )
    p50, p95 = pipeline.inference_percentiles()
    typer.echo(
        f"analysed {analysed} frames, ran detection on {pipeline.detections_run}, "
        f"{writer.count} events; inference p50 {p50:.1f} ms p95 {p95:.1f} ms",
        err=True,
    )


@app.command("fetch-model")
def fetch_model(
    profile: Annotated[str, typer.Argument(help="Model profile name.")],
    cache: Annotated[Path | None, typer.Option("--cache", help="Model cache folder.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Download from here instead.")] = None,
) -> None:
    """Download a model into the cache; refuse it when its sha256 differs from the profile."""
    from edge.errors import ModelError
    from edge.model_store import DEFAULT_CACHE
    from edge.model_store import fetch_model as fetch
    from firmware_configs.errors import FirmwareConfigError
    from firmware_configs.models import load_model_profile

    try:
        path = fetch(load_model_profile(profile), cache or DEFAULT_CACHE, url=url)
    except FirmwareConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except ModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(str(path))


@app.command("models")
def list_models() -> None:
    """List the model profiles this agent knows."""
    from firmware_configs.models import load_model_profile, model_profile_names

    for name in model_profile_names():
        profile = load_model_profile(name)
        size = f"{profile.input.width}x{profile.input.height}"
        if profile.input.trim_padding:
            size += " (padding trimmed)"
        typer.echo(f"{name}\t{size}\t{profile.decoder}\t{profile.description}")


def _stderr_console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True)
