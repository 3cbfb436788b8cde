"""The node's health: NodeHealth messages every interval and the same figures for Prometheus."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from edge.analyzer import Analyzer
from edge.camera import StreamState
from edge.link import AGENT_VERSION
from edge.outbox import Outbox
from protocols.base import utc_now
from protocols.enums import StreamStatus
from protocols.health import CameraHealth, DropCounts, InferenceHealth, NodeHealth, OutboxHealth

_STREAM_STATUS = {
    StreamState.CONNECTED: StreamStatus.CONNECTED,
    StreamState.CONNECTING: StreamStatus.CONNECTING,
    StreamState.OFFLINE: StreamStatus.OFFLINE,
    StreamState.DISABLED: StreamStatus.DISABLED,
}


def _temperature_c() -> float | None:
    read = getattr(psutil, "sensors_temperatures", None)
    if read is None:
        return None
    readings = [t.current for sensors in read().values() for t in sensors if t.current]
    return max(readings) if readings else None


class HealthReporter:
    def __init__(
        self,
        node_id: str,
        *,
        analyzer: Analyzer,
        outbox: Outbox,
        data_dir: Path,
        model: Callable[[], tuple[str, str | None] | None],
        config_version: Callable[[], int | None],
    ) -> None:
        self.node_id = node_id
        self.analyzer = analyzer
        self.outbox = outbox
        self.data_dir = data_dir
        self.model = model
        self.config_version = config_version
        self.started = time.monotonic()
        # Per camera, (when, connected seconds) at the previous report.
        self._connected: dict[str, tuple[float, float]] = {}
        psutil.cpu_percent(None)  # the first call only starts the measurement

    def cameras(self) -> list[CameraHealth]:
        now = time.monotonic()
        out = []
        for camera_id, (pipeline, reader, _) in sorted(self.analyzer.cameras().items()):
            if reader is None:
                out.append(
                    CameraHealth(
                        camera_id=camera_id,
                        status=StreamStatus.DISABLED,
                        input_fps=0,
                        analysed_fps=0,
                        reconnects=0,
                    )
                )
                continue
            age = (
                None
                if reader.last_frame_monotonic is None
                else max(0.0, now - reader.last_frame_monotonic)
            )
            connected = reader.connected_seconds(now)
            since, before = self._connected.get(camera_id, (self.started, 0.0))
            self._connected[camera_id] = (now, connected)
            fraction = (connected - before) / (now - since) if now > since else None
            out.append(
                CameraHealth(
                    camera_id=camera_id,
                    status=_STREAM_STATUS[reader.state],
                    input_fps=round(reader.input_rate.rate(), 2),
                    analysed_fps=round(pipeline.analysed.rate(), 2),
                    last_frame_age_s=age,
                    reconnects=reader.reconnects,
                    connected_fraction=None if fraction is None else min(1.0, max(0.0, fraction)),
                    width=reader.width,
                    height=reader.height,
                )
            )
        return out

    def inference(self) -> InferenceHealth | None:
        model = self.model()
        if model is None:
            return None
        pipelines = [p for p, _, _ in self.analyzer.cameras().values()]
        samples = [ms for p in pipelines for ms in p.inference_ms]
        p50, p95 = np.percentile(samples, [50, 95]) if samples else (0.0, 0.0)
        return InferenceHealth(
            model_profile=model[0],
            model_sha256=model[1],
            latency_p50_ms=float(p50),
            latency_p95_ms=float(p95),
            inferences=sum(p.detections_run for p in pipelines),
        )

    def snapshot(self) -> NodeHealth:
        memory = psutil.virtual_memory()
        disk = shutil.disk_usage(self.data_dir)
        stats = self.outbox.stats()
        skipped = sum(s for _, _, s in self.analyzer.cameras().values())
        return NodeHealth(
            node_id=self.node_id,
            sent_at=utc_now(),
            uptime_s=time.monotonic() - self.started,
            cpu_percent=min(100.0, psutil.cpu_percent(None)),
            memory_used_bytes=memory.total - memory.available,
            memory_total_bytes=memory.total,
            disk_used_bytes=disk.used,
            disk_total_bytes=disk.total,
            temperature_c=_temperature_c(),
            cameras=self.cameras(),
            inference=self.inference(),
            outbox=OutboxHealth(
                depth=stats.depth,
                oldest_age_s=stats.oldest_age_s,
                bytes=stats.bytes,
                budget_bytes=stats.budget_bytes,
                unreceipted=stats.unreceipted,
                unreceipted_oldest_age_s=stats.unreceipted_oldest_age_s,
            ),
            dropped=DropCounts(
                events=stats.dropped_events,
                snapshots=stats.dropped_snapshots,
                health=stats.dropped_health,
                frames=skipped,
            ),
            agent_version=AGENT_VERSION,
            config_version=self.config_version(),
            last_seq=self.outbox.last_seq(),
        )


class HealthCollector:
    """Prometheus collector: the NodeHealth figures, read when /metrics is scraped."""

    def __init__(self, reporter: HealthReporter) -> None:
        self.reporter = reporter

    def collect(self) -> Iterator[GaugeMetricFamily]:
        health = self.reporter.snapshot()

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            metric = GaugeMetricFamily(f"gridwatch_edge_{name}", doc)
            if value is not None:
                metric.add_metric([], value)
            return metric

        yield gauge("uptime_seconds", "Agent uptime.", health.uptime_s)
        yield gauge("cpu_percent", "Box CPU use.", health.cpu_percent)
        yield gauge("memory_used_bytes", "Memory in use.", health.memory_used_bytes)
        yield gauge("disk_used_bytes", "Disk in use (data volume).", health.disk_used_bytes)
        yield gauge("temperature_celsius", "Hottest sensor.", health.temperature_c)
        yield gauge("outbox_depth", "Entries awaiting the broker.", health.outbox.depth)
        yield gauge("outbox_bytes", "Outbox size.", health.outbox.bytes)
        yield gauge(
            "outbox_unreceipted",
            "Events the broker took that no county receipt has named yet.",
            health.outbox.unreceipted,
        )
        yield gauge(
            "outbox_oldest_age_seconds", "Age of the oldest entry.", health.outbox.oldest_age_s
        )
        dropped = GaugeMetricFamily(
            "gridwatch_edge_dropped_total", "Dropped, by kind.", labels=["kind"]
        )
        for kind in ("events", "snapshots", "health", "frames"):
            dropped.add_metric([kind], getattr(health.dropped, kind))
        yield dropped
        per_camera = {
            "input_fps": GaugeMetricFamily(
                "gridwatch_edge_camera_input_fps", "Frames decoded a second.", labels=["camera_id"]
            ),
            "analysed_fps": GaugeMetricFamily(
                "gridwatch_edge_camera_analysed_fps",
                "Frames analysed a second.",
                labels=["camera_id"],
            ),
            "reconnects": GaugeMetricFamily(
                "gridwatch_edge_camera_reconnects", "Stream reconnects.", labels=["camera_id"]
            ),
        }
        up = GaugeMetricFamily(
            "gridwatch_edge_camera_up", "1 when the stream is connected.", labels=["camera_id"]
        )
        for camera in health.cameras:
            for field, metric in per_camera.items():
                metric.add_metric([camera.camera_id], getattr(camera, field))
            up.add_metric([camera.camera_id], float(camera.status is StreamStatus.CONNECTED))
        yield from per_camera.values()
        yield up
        if health.inference is not None:
            latency = GaugeMetricFamily(
                "gridwatch_edge_inference_ms", "Inference latency.", labels=["quantile"]
            )
            latency.add_metric(["0.5"], health.inference.latency_p50_ms)
            latency.add_metric(["0.95"], health.inference.latency_p95_ms)
            yield latency


def metrics_registry(reporter: HealthReporter) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(HealthCollector(reporter))  # type: ignore[arg-type]
    return registry
