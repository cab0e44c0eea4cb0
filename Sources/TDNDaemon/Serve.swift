import ArgumentParser
import Foundation
import Logging
import Metrics
import ServiceLifecycle
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
        let first = try await Self.firstLoad(
            loader: loader, live: live, config: config, statePath: statePath, logger: logger)
        let store = first.store
        let probes = first.probes
        FreedMemory.release()
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
        let server: DNSServer
        do {
            server = try await DNSServer.start(settings: settings, store: store)
        } catch {
            logger.critical("cannot listen: \(error)")
            throw ExitCode(1)
        }
        let addresses = server.addresses.map(\.description).joined(separator: " ")
        logger.info("serving \(first.names) on \(addresses) (UDP and TCP)")
        if !first.summary.isEmpty { logger.info("steering: \(first.summary)") }

        let serving = live.serving
        let reloader = ZoneReloader<ConfigurationLoader.Loaded>(
            directory: config.zones, fingerprint: first.fingerprint, logger: logger, settle: Double(config.watchSettle),
            served: { serving.loaded?.set.snapshot.zones ?? [] },
            load: { [loader] previous in loader.loadAll(previous: previous, serving: serving.loaded) },
            zoneSet: { $0.set }, publish: { serving.publish($0) })
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: DNSService(server: server, logger: logger)),
            .init(service: ReloadService(reloader: reloader, interval: config.watchInterval, live: live)),
            .init(service: HealthService(live: live, probes: probes)),
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
    /// What the first load leaves behind: the store serving it, and what the log and the
    /// reloader need of it.
    struct FirstLoad {
        var store: SnapshotStore
        var probes: Task<Void, Never>
        var fingerprint: ZoneSet.Fingerprint
        var names: String
        var summary: String
    }

    /// The first load, with the probes' cold or warm start. A function of its own so that
    /// nothing of that load outlives it but what is published: an async function's locals can
    /// live as long as its frame, and `run`'s frame lives as long as the daemon (a whole
    /// snapshot, hundreds of MB for a large zone, was kept that way).
    static func firstLoad(
        loader: ConfigurationLoader, live: LiveState, config: DaemonConfig, statePath: String?, logger: Logger
    ) async throws -> FirstLoad {
        var loaded: ConfigurationLoader.Loaded
        switch loader.loadAll() {
        case .failure(let errors):
            report(errors)
            throw ExitCode(1)
        case .success(let value):
            loaded = value
        }
        // Cold start: saved states first (warm start); sites without one are probed before the
        // listeners open, for at most probe-start-timeout seconds. Until a site has a state it
        // counts as down.
        let restored = live.restore()
        live.configureProbes(loaded.probes)
        let probes = Task { await live.scheduler.run() }
        let targets = loaded.probes.count
        if targets > 0 {
            if restored > 0 { logger.info("health: warm start from \(statePath ?? "") (\(restored) sites saved)") }
            if !live.monitor.hasFirstRound {
                logger.info("health: probing \(targets) sites before serving (at most \(config.probeStartTimeout) s)")
                let complete = await live.monitor.awaitFirstRound(timeout: Double(config.probeStartTimeout))
                if !complete {
                    logger.warning(
                        "health: first probe round incomplete after \(config.probeStartTimeout) s; unprobed sites count as down"
                    )
                }
            }
            if loaded.policy != nil { loaded = loaded.recompiled(health: ProbePlan.view(loaded.probes, live.monitor)) }
        }
        let store = live.serving.publish(loaded)
        return FirstLoad(
            store: store, probes: probes, fingerprint: loaded.set.fingerprint,
            names: loaded.set.snapshot.zones.map { "\($0.origin) (serial \($0.serial))" }.joined(separator: ", "),
            summary: loaded.set.summary)
    }
}

/// Keeps the listeners up until a graceful shutdown, then closes them.
struct DNSService: Service {
    let server: DNSServer
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        await server.stop()
        logger.info("stopped")
    }
}

/// Reloads on SIGHUP and when a zone file changes (polled every `interval` seconds). The two
/// triggers feed one loop, so reloads never overlap.
struct ReloadService: Service {
    let reloader: ZoneReloader<ConfigurationLoader.Loaded>
    let interval: Int
    let live: LiveState

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
