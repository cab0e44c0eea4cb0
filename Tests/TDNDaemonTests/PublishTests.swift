import Logging
import TDNTestSupport
import Testing

@testable import TDNDNS
@testable import TDNDaemon

/// The daemon's one way to serve: a reload publishes the loaded configuration (what `/status`
/// and `/explain` read) and its snapshot (what DNS answers from) together, and a failed one
/// leaves both as they were.
@Suite("Publishing what is served")
struct PublishTests {
    @Test func aReloadPublishesConfigurationAndSnapshotTogether() throws {
        let zone = { (serial: Int) in
            SteeringTests.zone.replacingOccurrences(of: "hostmaster 1 ", with: "hostmaster \(serial) ")
        }
        let directory = SteeringTests.directory(zone: zone(1))
        let loader = ConfigurationLoader(config: SteeringTests.config(directory))
        let serving = ServingState()
        let first = try loader.loadAll().get()
        let store = serving.publish(first)
        #expect(store.load() === first.set.snapshot)
        var logger = Logger(label: "tdn.test")
        logger.logLevel = .critical
        let reloader = ZoneReloader<ConfigurationLoader.Loaded>(
            directory: directory, fingerprint: first.set.fingerprint, logger: logger,
            served: { serving.loaded?.set.snapshot.zones ?? [] },
            load: { previous in loader.loadAll(previous: previous, serving: serving.loaded) },
            zoneSet: { $0.set }, publish: { serving.publish($0) })

        writeFile(directory + "/t.example.zone", zone(2))
        #expect(reloader.reload() == .reloaded(zones: 1))
        let second = try #require(serving.loaded)
        #expect(store.load() === second.set.snapshot, "the store serves the configuration's own snapshot")
        #expect(second.set.snapshot.zones.map(\.serial) == [2])
        #expect(second.steering === first.steering, "an unchanged policy keeps its decisions")

        writeFile(directory + "/policy.yaml", "zone: t.example\nsites: {broken")
        guard case .failed = reloader.reload() else {
            Issue.record("a broken policy must fail the reload")
            return
        }
        #expect(serving.loaded?.set.snapshot === second.set.snapshot, "a failed reload changes nothing")
        #expect(store.load() === second.set.snapshot)
    }
}
