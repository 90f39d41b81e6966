"""The composition root: build every part from the config, run them, reload, stop.

Start order: config and rule files → store → scheduler → rule manager (with the
``for`` state saved by the last run) → web server → checks scheduled → rule
groups scheduled → ``READY=1``. Stop runs it backwards: ``STOPPING=1`` → rule
groups stopped → scheduler stopped (in-flight checks finish) → alert state saved
→ web server closed. The alert state is also saved every ``STATE_SAVE_INTERVAL``.
SIGHUP and ``POST /-/reload`` reload atomically: the new file and its rule files
are validated completely and every check and rule group is built before anything
changes; on failure the running config stays and the failure is logged and
exported as ``monitord_config_last_reload_successful 0``.

monitord scrapes itself (:mod:`monitor.selfscrape`): every ``global.scrape_interval``,
and once after every reload attempt, the samples of its self collectors are written
to the store, so rules (the ``monitord`` rule pack's) can read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from checks.base import Check
from monitor.config import Config, build_config_model, load_config, rule_file_paths
from monitor.errors import ConfigError, ConfigIssue, LifecycleError, PluginError
from monitor.exporter import ReloadStatus, build_registry
from monitor.log import get_logger
from monitor.plugins import PluginRegistry
from monitor.query import Engine, selectors
from monitor.scheduler import Scheduler
from monitor.selfscrape import SelfScrape
from monitor.store import Store
from monitor.systemd import SystemdNotifier
from monitor.web import WebApp, WebServer
from monitor.web.health import CheckState
from notifiers.api import SilencesAPI
from notifiers.base import Notifier
from notifiers.config import build_alerting_model
from notifiers.outbox import OutboxCollector
from notifiers.pipeline import NotificationPipeline, PipelineSettings
from notifiers.templates import TemplateLoadError, Templates
from rules.alerting import ForState
from rules.files import check_rule_files, load_rule_file
from rules.group import Group, build_group
from rules.manager import ManagerOptions, RuleManager
from rules.metrics import RuleCollector
from rules.packs import rule_pack_files
from rules.query import engine_query_func
from rules.rule import QueryFunc
from rules.state import AlertStateError, AlertStateStore
from rules.templates import TemplateExpander

__all__ = [
    "SELF_SCRAPE_JOB",
    "STATE_DB",
    "STATE_SAVE_INTERVAL",
    "STOP_GRACE",
    "Daemon",
    "check_registry",
]

log = get_logger("daemon")

STOP_GRACE = 8.0
"""Seconds in-flight checks get to finish on shutdown (systemd's stop timeout is longer)."""

NOTIFY_GRACE = 5.0
"""Seconds deliveries in flight get to finish on shutdown; the rest stay in the outbox."""

GC_INTERVAL = 60.0

STATE_SAVE_INTERVAL = 30.0
"""Seconds between saves of the alert ``for`` state (also saved on shutdown)."""

STATE_DB = "monitord.db"
"""The SQLite database in the state directory."""

SELF_SCRAPE_JOB = "monitord self-scrape"
"""The scheduler job id of the self-scrape (check names cannot contain a space)."""


def check_registry() -> PluginRegistry[Check[Any]]:
    """The check kinds installed (entry-point group ``monitord.checks``)."""
    return PluginRegistry[Check[Any]]("monitord.checks", Check)


def notifier_registry() -> PluginRegistry[Notifier[Any]]:
    """The receiver kinds installed (entry-point group ``monitord.notifiers``)."""
    return PluginRegistry[Notifier[Any]]("monitord.notifiers", Notifier)


def config_model(
    checks: PluginRegistry[Check[Any]], notifiers: PluginRegistry[Notifier[Any]]
) -> type[Config]:
    """The config model for the installed check and receiver kinds; raises PluginError."""
    alerting = build_alerting_model(notifiers.config_models())
    return build_config_model(checks.config_models(), alerting)


def load_templates(config: Config, config_path: Path) -> Templates:
    """The ``alerting.templates`` files, compiled; a broken one is a ConfigError."""
    patterns = config.alerting.templates if config.alerting is not None else ()
    try:
        return Templates.load(patterns, config_path.parent)
    except TemplateLoadError as exc:
        issue = ConfigIssue(str(config_path), None, "alerting.templates", str(exc))
        raise ConfigError([issue]) from None


class Daemon:
    """One monitord process: owns the store, scheduler and web server for its lifetime."""

    def __init__(
        self,
        config_path: str | Path,
        *,
        environ: Mapping[str, str] | None = None,
        notifier: SystemdNotifier | None = None,
        clock: Callable[[], float] = time.time,
        checks: PluginRegistry[Check[Any]] | None = None,
        notifiers: PluginRegistry[Notifier[Any]] | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self._environ = environ
        self._notifier = notifier if notifier is not None else SystemdNotifier(environ)
        self._clock = clock
        self._kinds = checks if checks is not None else check_registry()
        self._notifier_kinds = notifiers if notifiers is not None else notifier_registry()
        self._reload_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ready = False
        self.reload_status = ReloadStatus()
        self.config: Config | None = None
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.scheduler: Scheduler | None = None
        self.rules: RuleManager | None = None
        self.self_scrape: SelfScrape | None = None
        self._self_scrape_interval: float | None = None
        self.web: WebServer | None = None
        self._alert_state: AlertStateStore | None = None
        self.notifications: NotificationPipeline | None = None
        self._loaded_templates = Templates()
        self._query: QueryFunc | None = None
        self._expander = TemplateExpander(query=self._template_query)

    # --- config -----------------------------------------------------------------------------

    def load(self) -> tuple[Config, list[Check[Any]]]:
        """Validate the config file and build its checks, changing nothing that runs."""
        try:
            model = config_model(self._kinds, self._notifier_kinds)
        except PluginError as exc:
            raise ConfigError([ConfigIssue(str(self.config_path), None, "", str(exc))]) from exc
        config = load_config(
            self.config_path,
            model=model,
            environ=self._environ,
            check_rule_files=check_rule_files,
            packs=rule_pack_files(),
        )
        self._loaded_templates = load_templates(config, self.config_path)
        checks = [self._kinds.get(c.type)(c) for c in config.checks]
        return config, checks

    def _pipeline_settings(self, config: Config) -> PipelineSettings:
        return PipelineSettings(
            alerting=config.alerting,
            templates=self._loaded_templates,
            external_url=config.server.effective_external_url,
            external_labels=dict(config.global_.external_labels),
            resend_delay=config.rule_evaluation.resend_delay,
        )

    def load_rules(self, config: Config) -> list[Group]:
        """Build the rule groups of ``config``'s rule files; ConfigError lists every issue."""
        groups: list[Group] = []
        issues: list[ConfigIssue] = []
        for path in rule_file_paths(config):
            try:
                rule_file = load_rule_file(path, expander=self._expander)
            except ConfigError as exc:
                issues.extend(exc.issues)
                continue
            groups.extend(
                build_group(
                    spec,
                    default_interval=config.global_.evaluation_interval,
                    expander=self._expander,
                    external_labels=config.global_.external_labels,
                    external_url=config.server.effective_external_url,
                )
                for spec in rule_file.groups
            )
        if issues:
            raise ConfigError(issues)
        return groups

    def _template_query(self, expr: str) -> list[Mapping[str, Any]]:
        """``{{ query "..." }}`` in alert templates: an instant query at the current time."""
        if self._query is None:
            raise LifecycleError("queries are not available before the daemon has started")
        samples = self._query(expr, round(self._clock() * 1000))
        return [{"Labels": dict(s.labels.items_tuple()), "Value": s.value} for s in samples]

    def _rule_options(self, config: Config) -> ManagerOptions:
        evaluation = config.rule_evaluation
        return ManagerOptions(
            resend_delay=round(evaluation.resend_delay * 1000),
            outage_tolerance=round(evaluation.for_outage_tolerance * 1000),
            grace_period=round(evaluation.for_grace_period * 1000),
            default_query_offset=round(evaluation.query_offset * 1000),
            external_labels=dict(config.global_.external_labels),
            external_url=config.server.effective_external_url,
            on_arrival=evaluation.on_arrival,
        )

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or :meth:`request_stop`; the process exit code."""
        config, checks = self.load()  # ConfigError propagates: the CLI exits 2
        groups = self.load_rules(config)
        self.config = config
        self.store = Store(
            samples_per_series=config.store.samples_per_series,
            retention=config.store.retention,
            max_series=config.store.max_series,
        )
        self.scheduler = Scheduler(
            self.store,
            clock=self._clock,
            max_concurrent=config.global_.max_concurrent_checks,
        )
        self._alert_state = AlertStateStore(config.state_dir / STATE_DB)
        self.engine = Engine(self.store, default_subquery_step=config.global_.evaluation_interval)
        self._query = engine_query_func(self.engine)
        rules = self.rules = RuleManager(
            self.store,
            self._query,
            options=self._rule_options(config),
            scheduler=self.scheduler,
            selectors=selectors,
            saved=self._load_alert_state(),
            clock=self._clock,
        )
        rules.update(groups)
        self.scheduler.on_write = rules.samples_written
        pipeline = self.notifications = NotificationPipeline(
            self._notifier_kinds, config.state_dir / STATE_DB, clock=self._clock
        )
        await pipeline.start(self._pipeline_settings(config))
        rules.sink = pipeline
        self_scrape = self.self_scrape = SelfScrape(
            self.scheduler.write, self.store.set_metadata, clock=self._clock
        )
        registry = build_registry(
            self.store,
            self.scheduler.stats,
            self.reload_status,
            lambda: self.scheduler.in_flight if self.scheduler else 0,
            self_scrape=self_scrape,
        )
        registry.register(self_scrape.add(RuleCollector(rules.groups)))
        assert pipeline.deliverer is not None and pipeline.silences is not None
        registry.register(self_scrape.add(OutboxCollector(pipeline.deliverer)))
        token = self._token
        app = WebApp(
            registry=registry,
            reload=self.reload,
            is_ready=lambda: self._ready,
            token=token,
            rule_groups=rules.groups,
            checks=self.check_states,
            config=lambda: self.config,
            extra_routes=(SilencesAPI(pipeline.silences, token).register, pipeline.register),
        )
        self.web = WebServer(app, config.server.listen)
        try:
            await self.web.start()
        except OSError as exc:
            log.error("cannot listen on %s: %s", config.server.listen, exc.strerror)
            return 1
        self.reload_status.successful = True
        self.reload_status.last_success = self._clock()
        try:
            await self.scheduler.start()
            await self.scheduler.set_checks(checks)
            await rules.start()
            self._schedule_self_scrape(config)
            self._install_signal_handlers()
            self._spawn(self._gc_loop(), "store gc")
            self._spawn(self._save_loop(), "alert state saving")
            if self._notifier.watchdog_interval is not None:
                self._spawn(self._notifier.run_watchdog(), "systemd watchdog")
            self._ready = True
            self._notifier.ready(f"{len(checks)} checks and {len(groups)} rule groups scheduled")
            log.info(
                "monitord started with %d checks and %d rule groups from %s",
                len(checks),
                len(groups),
                self.config_path,
            )
            await self._stop.wait()
        finally:
            await self._shutdown()
        return 0

    def _token(self) -> SecretStr | None:
        return self.config.server.token if self.config is not None else None

    def check_states(self) -> list[CheckState]:
        """Every scheduled check's kind, interval, last result and next run, for
        ``/api/v1/health``."""
        scheduler = self.scheduler
        if scheduler is None:
            return []
        checks = self.config.checks if self.config is not None else []
        intervals = {check.name: check.interval for check in checks}
        return [
            CheckState(
                name,
                kind,
                intervals.get(name),
                stats.last_result,
                stats.last_run,
                scheduler.next_run(name),
            )
            for name, (kind, stats) in scheduler.stats().items()
        ]

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop gracefully (what SIGTERM does)."""
        self._stop.set()

    async def _shutdown(self) -> None:
        self._ready = False
        self._notifier.stopping()
        log.info("stopping")
        self._remove_signal_handlers()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.rules is not None:
            await self.rules.stop()
        if self.notifications is not None:
            await self.notifications.stop(grace=NOTIFY_GRACE)
        if self.scheduler is not None:
            self.scheduler.remove_job(SELF_SCRAPE_JOB)
            with contextlib.suppress(LifecycleError):
                await self.scheduler.stop(grace=STOP_GRACE)
        self._save_alert_state()
        if self.web is not None:
            await self.web.stop()
        log.info("stopped")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_sighup(self) -> None:
        async def reload_quietly() -> None:
            with contextlib.suppress(ConfigError):  # already logged and exported
                await self.reload()

        self._spawn(reload_quietly(), "reload")

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(GC_INTERVAL)
            if self.store is not None:
                removed = self.store.gc(round(self._clock() * 1000))
                if removed:
                    log.debug("dropped %d series past retention", removed)

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(STATE_SAVE_INTERVAL)
            if self.rules is not None and self._alert_state is not None:
                states = self.rules.for_states()
                try:
                    await asyncio.to_thread(self._alert_state.save, states)
                except AlertStateError as exc:
                    log.error("%s", exc)

    # --- self-scrape ------------------------------------------------------------------------

    def _schedule_self_scrape(self, config: Config) -> None:
        """Scrape every ``global.scrape_interval`` from now on; the cadence is kept over
        reloads that leave the interval as it is."""
        interval = config.global_.scrape_interval
        if self.scheduler is None or interval == self._self_scrape_interval:
            return
        self.scheduler.add_interval_job(SELF_SCRAPE_JOB, self._scrape_self, interval, self._clock())
        self._self_scrape_interval = interval

    async def _scrape_self(self) -> None:
        if self.self_scrape is not None:
            self.self_scrape.scrape()

    # --- alert state ------------------------------------------------------------------------

    def _load_alert_state(self) -> list[ForState]:
        if self._alert_state is None:
            return []
        try:
            states = self._alert_state.load()
        except AlertStateError as exc:
            log.error("%s; alerts start afresh", exc)
            return []
        if states:
            log.info("read the saved 'for' state of %d alerts", len(states))
        return states

    def _save_alert_state(self) -> None:
        if self.rules is None or self._alert_state is None:
            return
        try:
            self._alert_state.save(self.rules.for_states())
        except AlertStateError as exc:
            log.error("%s", exc)

    # --- reload -----------------------------------------------------------------------------

    async def reload(self) -> None:
        """Load the config file again and apply it; on error keep the running config."""
        async with self._reload_lock:
            if self.scheduler is None or self.store is None or self.config is None:
                raise LifecycleError("reload before the daemon started")
            self._notifier.reloading()
            try:
                try:
                    config, checks = self.load()
                    groups = self.load_rules(config)
                except ConfigError as exc:
                    self.reload_status.successful = False
                    log.error("reload failed, keeping the running config:\n%s", exc)
                    raise
                if config.server.listen != self.config.server.listen:
                    log.warning(
                        "server.listen changed to %s; it takes effect on restart",
                        config.server.listen,
                    )
                self.store.reconfigure(
                    samples_per_series=config.store.samples_per_series,
                    retention=config.store.retention,
                    max_series=config.store.max_series,
                )
                self.scheduler.max_concurrent = config.global_.max_concurrent_checks
                await self.scheduler.set_checks(checks)
                if self.engine is not None:
                    self.engine.default_subquery_step = config.global_.evaluation_interval
                if self.notifications is not None:
                    await self.notifications.apply(self._pipeline_settings(config))
                if self.rules is not None:
                    self.rules.configure(self._rule_options(config))
                    self.rules.update(groups)
                self.config = config
                self.reload_status.successful = True
                self.reload_status.last_success = self._clock()
                self._schedule_self_scrape(config)
                log.info("config reloaded: %d checks, %d rule groups", len(checks), len(groups))
            finally:
                # The outcome is in the store at once, not a scrape interval later.
                if self.self_scrape is not None:
                    self.self_scrape.scrape()
                self._notifier.ready()
