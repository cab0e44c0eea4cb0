import ArgumentParser
import Foundation
import HealthProbe
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import TDNDNS
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the zones over UDP and TCP (SIGHUP or a changed file reloads; SIGTERM stops).")

    @OptionGroup var options: CommonOptions

    func run() async throws {
        // A SIGHUP before the reload service listens must not kill the daemon (its default
        // action): ignore it until then; UnixSignalsSequence takes it over.
        signal(SIGHUP, SIG_IGN)
        FreedMemory.configure()
        let logger = options.makeLogger("tdn.dns")
        let config = try options.resolveOrExit()
        MetricsSetup.bootstrapOnce()
        let state = ServingState()
        var statePath: String? = nil
        if let directory = config.stateDir {
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            statePath = directory + "/health.json"
        }
        let live = LiveState(
            serving: state, statePath: statePath, adminToken: config.adminToken, concurrency: config.probeConcurrency,
            logger: options.makeLogger("tdn.health"))
        var loader = ConfigurationLoader(config: config)
        loader.health = { [monitor = live.monitor] probes in ProbePlan.view(probes, monitor) }
        let first = try Self.firstLoad(loader: loader, live: live, statePath: statePath, logger: logger)
        var settings = ServerSettings(listen: config.listen, threads: config.threads)
        settings.maxUDPPayload = config.udpPayloadSize
        settings.tcp.idleTimeout = .seconds(Int64(config.tcpIdleTimeout))
        settings.tcp.maxConnections = config.tcpMaxConnections
        settings.tcp.messageTimeout = .seconds(Int64(config.tcpMessageTimeout))
        settings.tcp.maxPerClient = config.tcpMaxPerClient
        // DNS over TCP, both HTTP servers' caps and the probes in flight, with room to spare.
        ensureDescriptors(
            needed: config.tcpMaxConnections * config.listen.count + config.http.maxConnections
                + config.probeConcurrency + 256,
            what: "tdnd serve", logger: logger)
        settings.stats = live.queryStats
        let (listening, opened) = AsyncStream.makeStream(of: Void.self)

        let serving = live.serving
        let reloader = ZoneReloader<ConfigurationLoader.Loaded>(
            directory: config.zones, fingerprint: first.fingerprint, logger: logger, settle: Double(config.watchSettle),
            served: { serving.loaded?.set.snapshot.zones ?? [] },
            load: { [loader] previous in loader.loadAll(previous: previous, serving: serving.loaded) },
            zoneSet: { $0.set }, publish: { serving.publish($0) })
        // Shut down in reverse: the probes stop first, then the health service saves and closes
        // the prober, the reloads stop, and the listeners close last.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(
                service: DNSService(
                    first: first, settings: settings, live: live, startTimeout: config.probeStartTimeout,
                    opened: opened, logger: logger)),
            .init(
                service: ReloadService(reloader: reloader, interval: config.watchInterval, live: live, after: listening)
            ),
            .init(service: HealthService(live: live)),
            .init(service: ProbeService(scheduler: live.scheduler)),
        ]
        if let status = config.status {
            services.append(
                .init(
                    service: StatusServer.make(
                        address: status, live: live, limits: config.http, logger: options.makeLogger("tdn.status"))))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }
}

extension Serve {
    /// What the first load leaves for the DNS service: the configuration to publish once the
    /// first probe round is in (taken once, so that nothing keeps it after), and what the log
    /// and the reloader need of it.
    final class FirstLoad: Sendable {
        private let pending: Mutex<ConfigurationLoader.Loaded?>
        let fingerprint: ZoneSet.Fingerprint

        init(_ loaded: ConfigurationLoader.Loaded) {
            pending = Mutex(loaded)
            fingerprint = loaded.set.fingerprint
        }

        /// The loaded configuration; nil after the first call.
        func take() -> ConfigurationLoader.Loaded? { pending.withLock { $0.take() } }
    }

    /// The first load; the probes are pointed at its sites, from their saved states when there
    /// are some (warm start).
    static func firstLoad(
        loader: ConfigurationLoader, live: LiveState, statePath: String?, logger: Logger
    ) throws -> FirstLoad {
        let loaded = try TDNDaemon.loaded(loader.loadAll())
        let restored = live.restore()
        live.configureProbes(loaded.probes)
        if restored > 0 && !loaded.probes.isEmpty {
            logger.info("health: warm start from \(statePath ?? "") (\(restored) sites saved)")
        }
        return FirstLoad(loaded)
    }
}

/// Opens the DNS listeners on the first snapshot, keeps them up until a graceful shutdown,
/// then closes them. Cold start: sites without a saved state are probed (by the probe service,
/// already running) before the listeners open, for at most `startTimeout` seconds; until a
/// site has a state it counts as down.
struct DNSService: Service {
    let first: Serve.FirstLoad
    let settings: ServerSettings
    let live: LiveState
    let startTimeout: Int
    /// Told once the listeners are open (the reloads start then).
    let opened: AsyncStream<Void>.Continuation
    let logger: Logger

    func run() async throws {
        guard let server = try await open() else { return }
        opened.finish()
        try? await gracefulShutdown()
        await server.stop()
        logger.info("stopped")
    }

    /// The first snapshot published and the listeners open on it; nil when the first load was
    /// already taken.
    private func open() async throws -> DNSServer? {
        guard var loaded = first.take() else { return nil }
        if !loaded.probes.isEmpty && !live.monitor.hasFirstRound {
            logger.info("health: probing \(loaded.probes.count) sites before serving (at most \(startTimeout) s)")
            if !(await live.monitor.awaitFirstRound(timeout: Double(startTimeout))) {
                logger.warning(
                    "health: first probe round incomplete after \(startTimeout) s; unprobed sites count as down")
            }
        }
        if loaded.policy != nil && !loaded.probes.isEmpty {
            loaded = loaded.recompiled(health: ProbePlan.view(loaded.probes, live.monitor))
        }
        let names = loaded.set.snapshot.zones.map { "\($0.origin) (serial \($0.serial))" }.joined(separator: ", ")
        let summary = loaded.set.summary
        let store = live.serving.publish(loaded)
        // A health change between the view above and this publish found nothing to rebuild.
        await live.rebuild()
        FreedMemory.release()
        let server: DNSServer
        do {
            server = try await DNSServer.start(settings: settings, store: store)
        } catch {
            logger.critical("cannot listen: \(error)")
            throw ExitCode(1)
        }
        let addresses = server.addresses.map(\.description).joined(separator: " ")
        logger.info("serving \(names) on \(addresses) (UDP and TCP)")
        if !summary.isEmpty { logger.info("steering: \(summary)") }
        return server
    }
}

/// Reloads on SIGHUP and when a zone file changes (polled every `interval` seconds). The two
/// triggers feed one loop, so reloads never overlap.
struct ReloadService: Service {
    let reloader: ZoneReloader<ConfigurationLoader.Loaded>
    let interval: Int
    let live: LiveState
    /// Ends when the listeners are open: there is nothing to reload before.
    let after: AsyncStream<Void>

    /// One reload under the snapshot lock; a success points the probes at the new sites.
    func reload(_ trigger: Trigger) async {
        let outcome = await LiveState.offPool { [reloader, live] in
            live.lock.withLock { _ in trigger == .signal ? reloader.reload() : reloader.reloadIfChanged() }
        }
        switch outcome {
        case .reloaded:
            Counter(label: "tdn_reloads_total", dimensions: [("result", "success")]).increment()
            live.configureProbes(live.serving.loaded?.probes ?? [])
            FreedMemory.release()
        case .failed:
            Counter(label: "tdn_reloads_total", dimensions: [("result", "failure")]).increment()
        case .unchanged, .settling:
            break
        }
    }

    enum Trigger {
        case signal
        case tick
    }

    func run() async throws {
        for await _ in after {}
        let (triggers, continuation) = AsyncStream.makeStream(of: Trigger.self, bufferingPolicy: .bufferingNewest(4))
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in await UnixSignalsSequence(trapping: .sighup) { continuation.yield(.signal) }
                }
                if interval > 0 {
                    group.addTask {
                        while !Task.isCancelled {
                            try? await Task.sleep(for: .seconds(interval))
                            continuation.yield(.tick)
                        }
                    }
                }
                group.addTask {
                    for await trigger in triggers { await reload(trigger) }
                }
                await group.next()
                group.cancelAll()
                continuation.finish()
            }
        }
    }
}
