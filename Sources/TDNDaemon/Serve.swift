import ArgumentParser
import Logging
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
        let logger = options.makeLogger("tdn.dns")
        let config = try options.resolveOrExit()
        let state = ServingState()
        let loader = ConfigurationLoader(config: config, state: state)
        let zones: ZoneSet
        switch loader.load() {
        case .failure(let errors):
            report(errors)
            throw ExitCode(1)
        case .success(let set):
            zones = set
        }
        let store = SnapshotStore(zones.snapshot)
        var settings = ServerSettings(listen: config.listen, threads: config.threads)
        settings.maxUDPPayload = config.udpPayloadSize
        settings.tcp.idleTimeout = .seconds(Int64(config.tcpIdleTimeout))
        settings.tcp.maxConnections = config.tcpMaxConnections
        let server: DNSServer
        do {
            server = try await DNSServer.start(settings: settings, store: store)
        } catch {
            logger.critical("cannot listen: \(error)")
            throw ExitCode(1)
        }
        let names = zones.snapshot.zones.map { "\($0.origin) (serial \($0.serial))" }.joined(separator: ", ")
        let addresses = server.addresses.map(\.description).joined(separator: " ")
        logger.info("serving \(names) on \(addresses) (UDP and TCP)")
        if !zones.summary.isEmpty { logger.info("steering: \(zones.summary)") }

        let reloader = ZoneReloader(directory: config.zones, initial: zones, store: store, logger: logger, load: loader.load)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: DNSService(server: server, logger: logger)),
            .init(service: ReloadService(reloader: reloader, interval: config.watchInterval)),
        ]
        if let status = config.status {
            services.append(.init(service: StatusServer.make(address: status, state: state, logger: options.makeLogger("tdn.status"))))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
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
    let reloader: ZoneReloader
    let interval: Int

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
                    for await trigger in triggers {
                        switch trigger {
                        case .signal: _ = reloader.reload()
                        case .tick: _ = reloader.reloadIfChanged()
                        }
                    }
                }
                await group.next()
                group.cancelAll()
                continuation.finish()
            }
        }
    }
}
