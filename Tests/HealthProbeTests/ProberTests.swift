import FakeEdge
import Foundation
import HealthProbe
import TDNTestSupport
import Testing

/// The prober, scheduler and monitor against real local HTTP servers (the fake vLLM fleet).
@Suite("Probes over HTTP", .serialized, .timing)
struct ProberTests {
    static let models = ["llama-13b", "mistral-7b"]

    func withFleet(_ sites: [String], _ body: (FakeEdgeFleet, Prober) async throws -> Void) async throws {
        let fleet = try await FakeEdgeFleet.start(sites: sites, models: Self.models)
        let prober = Prober()
        do {
            try await body(fleet, prober)
        } catch {
            await prober.shutdown()
            await fleet.stop()
            throw error
        }
        await prober.shutdown()
        await fleet.stop()
    }

    func target(_ fleet: FakeEdgeFleet, _ site: String, timeout: Double = 0.5) -> ProbeTarget {
        ProbeTarget(
            site: site, http: .init(url: fleet.url(site) + "/health"), metrics: fleet.url(site) + "/metrics",
            models: fleet.url(site) + "/v1/models", interval: 1, timeout: timeout)
    }

    @Test func healthyEdgeReportsLoadAndModels() async throws {
        try await withFleet(["a"]) { fleet, prober in
            let result = await prober.probe(target(fleet, "a"))
            #expect(result.healthy, "\(result.detail)")
            #expect(result.models == Set(Self.models))
            let load = try #require(result.capacity?.load)
            // running 5 of 256, waiting 0 of 32, KV cache 0.12 of 0.95: the KV cache dominates.
            #expect(abs(load - 0.12 / 0.95) < 1e-9)
            #expect(result.rtt != nil && result.rtt! < 0.5, "loopback: well under the timeout")
            #expect(Set(result.checks.map(\.kind)) == ["http", "metrics", "models"])
        }
    }

    @Test(arguments: [FakeEdgeFleet.Mode.failing, .dead, .slow])
    func failingEdgesAreUnhealthy(mode: FakeEdgeFleet.Mode) async throws {
        try await withFleet(["a"]) { fleet, prober in
            fleet.set("a", mode)
            fleet.setSlowDelay("a", 1)
            let result = await prober.probe(target(fleet, "a", timeout: 0.3))
            #expect(!result.healthy, "\(mode): \(result.detail)")
            switch mode {
            case .failing: #expect(result.detail.contains("HTTP 503"))
            case .slow: #expect(result.detail.contains("timed out"))
            default: #expect(!result.detail.isEmpty)
            }
        }
    }

    @Test func fullEdgeIsHealthyButLoaded() async throws {
        try await withFleet(["a"]) { fleet, prober in
            fleet.set("a", .full)
            let result = await prober.probe(target(fleet, "a"))
            #expect(result.healthy)
            #expect(result.capacity?.load == 1)
        }
    }

    @Test func busyEngineSlowOnHealthIsFullNotDead() async throws {
        try await withFleet(["a"]) { fleet, prober in
            fleet.set("a", .busy)
            fleet.setSlowDelay("a", 1)
            let result = await prober.probe(target(fleet, "a", timeout: 0.3))
            #expect(result.healthy, "alive: /metrics answered")
            #expect(result.capacity?.load == 1, "counted as full")
            #expect(result.detail.contains("counted as full"))
        }
    }

    @Test func httpExpectationsAndTCP() async throws {
        try await withFleet(["a"]) { fleet, prober in
            var probe = ProbeTarget(
                site: "a", http: .init(url: fleet.url("a") + "/v1/models", expect: [200], body: "mistral-7b"),
                timeout: 0.5)
            #expect(await prober.probe(probe).healthy)
            probe.http?.body = "llama-70b"
            let missing = await prober.probe(probe)
            #expect(!missing.healthy && missing.detail.contains("without 'llama-70b'"))
            probe.http = .init(url: fleet.url("a") + "/nothing", expect: [200, 204])
            #expect(await !prober.probe(probe).healthy)
            let tcp = ProbeTarget(site: "a", tcp: "127.0.0.1:\(fleet.port)", timeout: 0.5)
            #expect(await prober.probe(tcp).healthy)
            // A closed port: refused.
            let closed = ProbeTarget(site: "a", tcp: "127.0.0.1:1", timeout: 0.5)
            let refused = await prober.probe(closed)
            #expect(!refused.healthy && refused.detail.contains("TCP 127.0.0.1:1"))
        }
    }

    /// Hostile edges answer /health but report capacity or models that cannot be trusted: each
    /// is a failed scrape, and a site without a good figure counts as full from its first probe.
    @Test(arguments: [FakeEdgeFleet.Mode.oversized, .malformed, .negative, .manyModels])
    func hostileEdgesAreFailedScrapesAndCountAsFull(mode: FakeEdgeFleet.Mode) async throws {
        try await withFleet(["a", "b"]) { fleet, prober in
            fleet.set("a", mode)
            let result = await prober.probe(target(fleet, "a"))
            #expect(result.healthy, "\(mode): /health answers 200: \(result.detail)")
            switch mode {
            case .oversized:
                #expect(result.capacity == nil && result.models == nil, "\(result.detail)")
                #expect(result.detail.contains("larger than"), "\(result.detail)")
            case .malformed:
                #expect(result.capacity == nil && result.models == nil, "\(result.detail)")
            case .negative:
                #expect(result.capacity == nil, "\(result.detail)")
                #expect(result.detail.contains("not a plausible load figure"), "\(result.detail)")
                #expect(result.models == Set(Self.models))
            default:
                #expect(result.capacity != nil)
                #expect(
                    result.models == nil && result.detail.contains("model list of 5002 entries"), "\(result.detail)")
            }
            #expect(result.checks.contains { !$0.ok }, "the failed part is counted as a failed probe")

            // Through the monitor: from the very first probe, a site whose scrapes never
            // succeeded is full (answered last), a good one is not.
            let monitor = HealthMonitor()
            monitor.configure([target(fleet, "a"), target(fleet, "b")])
            monitor.record(site: "a", result: result)
            monitor.record(site: "b", result: await prober.probe(target(fleet, "b")))
            if mode != .manyModels {
                #expect(monitor.view()["a"]?.saturated == true, "\(mode): no good figure yet counts as full")
                #expect(monitor.view()["a"]?.unsettled == true)
            }
            #expect(monitor.view()["b"]?.saturated == false)
            #expect(monitor.view()["a"]?.up == true)
        }
    }

    @Test func schedulerProbesEveryTargetOnTimeWithBoundedConcurrency() async throws {
        let sites = (0..<200).map { "s\($0)" }
        try await withFleet(sites) { fleet, prober in
            let monitor = HealthMonitor()
            let scheduler = ProbeScheduler(prober: prober, monitor: monitor, maxConcurrent: 16)
            let targets = sites.map {
                ProbeTarget(
                    site: $0, http: .init(url: fleet.url($0) + "/health"), interval: 0.5, timeout: 0.4, jitter: 0.05)
            }
            monitor.configure(targets)
            scheduler.update(targets)
            // A child task, so that it runs where the test does (`.timing`).
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await scheduler.run() }
                #expect(await monitor.awaitFirstRound(timeout: 5))
                try? await Task.sleep(for: .seconds(2))
                group.cancelAll()
            }
            let statistics = scheduler.statistics
            // 200 targets every 0.5 s for about 2.5 s: about 1,000 probes.
            #expect(statistics.completed >= 800, "\(statistics.completed) probes")
            #expect(statistics.lagPercentile(0.99) < 0.25, "p99 lag \(statistics.lagPercentile(0.99))")
            let health = fleet.site("s7")?.requests["health"] ?? 0
            #expect((4...7).contains(health), "each site every 0.5 s ± jitter: \(health)")
            let allUp = monitor.view().values.allSatisfy { $0.up }
            #expect(allUp)
        }
    }
}

@Suite("Health monitor")
struct HealthMonitorTests {
    final class Clock: @unchecked Sendable {
        var now = 1_000.0
    }

    func result(_ healthy: Bool, load: Double? = nil, models: Set<String>? = nil) -> ProbeResult {
        var result = ProbeResult(healthy: healthy, detail: healthy ? "HTTP 200" : "HTTP 503")
        if let load { result.capacity = CapacityModel.Reading(load: load, parts: []) }
        result.models = models
        return result
    }

    @Test func viewFollowsProbesAndSignalsChanges() async throws {
        let clock = Clock()
        let monitor = HealthMonitor(clock: { clock.now })
        let rules = HealthRules(rise: 2, fall: 2, staleAfter: 15)
        monitor.configure([ProbeTarget(site: "a", interval: 5, rules: rules)])
        #expect(!monitor.hasFirstRound)
        #expect(monitor.view()["a"]?.up == false, "unknown counts as down")
        monitor.record(site: "a", result: result(true, load: 0.2, models: ["m"]))
        #expect(monitor.hasFirstRound)
        let view = try #require(monitor.view()["a"])
        #expect(view.up && !view.saturated && view.models == ["m"] && !view.unsettled && view.lastUp == nil)
        clock.now += 5
        monitor.record(site: "a", result: result(false, load: 0.2))
        #expect(monitor.view()["a"]?.up == true && monitor.view()["a"]?.unsettled == true, "one failure: near a change")
        clock.now += 5
        monitor.record(site: "a", result: result(false, load: 0.2))
        #expect(monitor.view()["a"]?.up == false && monitor.view()["a"]?.lastUp == 1005, "down: when it was last up")
        let status = try #require(monitor.status().first)
        #expect(status.state == "down" && status.why == "down: HTTP 503" && status.since == 1010)
        // Models not refreshed for longer than the staleness bound: none count as loaded.
        clock.now += 20
        #expect(monitor.view()["a"]?.models == [])
    }

    /// Staleness runs on the monotonic clock: a step of the wall clock (NTP, an operator) in
    /// either direction neither ages capacity and model data nor refreshes it; shown and saved
    /// times follow the wall clock, and a saved state comes back at the same age.
    @Test func aWallClockStepMovesNoAge() throws {
        let monotonic = Clock()
        let wall = Clock()
        wall.now = 1_700_000_000
        let monitor = HealthMonitor(clock: { monotonic.now }, wallClock: { wall.now })
        let rules = HealthRules(rise: 1, fall: 1, staleAfter: 15)
        monitor.configure([ProbeTarget(site: "a", interval: 5, rules: rules)])
        monitor.record(site: "a", result: result(true, load: 0.2, models: ["m"]))
        monotonic.now += 1
        wall.now += 3600
        #expect(monitor.view()["a"]?.saturated == false, "1 s old capacity data is fresh after a step forward")
        #expect(monitor.view()["a"]?.models == ["m"])
        wall.now -= 7200
        #expect(monitor.view()["a"]?.saturated == false, "and after a step back")
        let status = try #require(monitor.status().first)
        #expect(status.since == wall.now - 1, "shown on the wall clock: 1 s ago")
        monotonic.now += 20
        wall.now += 20
        #expect(monitor.view()["a"]?.saturated == true, "21 s without capacity data: full")

        let directory = NSTemporaryDirectory() + "tdn-health-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try monitor.save(to: directory + "/health.json")
        // Another process: its monotonic clock starts elsewhere.
        let otherMonotonic = Clock()
        otherMonotonic.now = 50
        let restarted = HealthMonitor(clock: { otherMonotonic.now }, wallClock: { wall.now })
        restarted.restore(try #require(try HealthMonitor.loadSaved(from: directory + "/health.json")))
        restarted.configure([ProbeTarget(site: "a", interval: 5, rules: rules)])
        #expect(try #require(restarted.status().first).since == status.since, "the same moment on the wall clock")
    }

    /// A site taken out by an operator keeps the view it had when taken out while its probes
    /// go on succeeding: its last-up time is the moment it left, so steering is not rebuilt
    /// on every probe of every drained site, and last-known-good ranks it by that moment.
    @Test func aForcedDownSiteKeepsItsViewWhileProbesSucceed() {
        let clock = Clock()
        let monitor = HealthMonitor(clock: { clock.now })
        monitor.configure([ProbeTarget(site: "a", interval: 5), ProbeTarget(site: "b", interval: 5)])
        monitor.record(site: "a", result: result(true))
        monitor.record(site: "b", result: result(true))
        clock.now += 5
        #expect(monitor.force(site: "a", .down))
        #expect(monitor.force(site: "b", .drain))
        let taken = clock.now
        let first = monitor.view()
        #expect(first["a"]?.up == false && first["a"]?.lastUp == taken)
        #expect(first["b"]?.up == false && first["b"]?.lastUp == taken)
        for _ in 0..<3 {
            clock.now += 5
            monitor.record(site: "a", result: result(true))
            monitor.record(site: "b", result: result(true))
            #expect(monitor.view() == first, "probes of a site that is out change nothing steering reads")
        }
        // Back in service: probes move its last-up time again once it is down for real.
        #expect(monitor.force(site: "a", nil))
        clock.now += 5
        monitor.record(site: "a", result: result(true))
        #expect(monitor.view()["a"]?.up == true)
    }

    @Test func reloadKeepsStateAndForcedStateSurvivesSaveAndRestore() throws {
        let clock = Clock()
        let monitor = HealthMonitor(clock: { clock.now })
        let target = ProbeTarget(site: "a", interval: 5)
        monitor.configure([target, ProbeTarget(site: "b", interval: 5)])
        monitor.record(site: "a", result: result(true))
        monitor.record(site: "b", result: result(true))
        #expect(monitor.force(site: "b", .drain))
        #expect(!monitor.force(site: "nope", .down))
        // A reload with new rules keeps what was measured and the forced state.
        monitor.configure([
            ProbeTarget(site: "a", interval: 2), ProbeTarget(site: "b", interval: 2),
            ProbeTarget(site: "c", interval: 2),
        ])
        #expect(monitor.view()["a"]?.up == true)
        #expect(monitor.view()["b"]?.up == false, "drained: no new clients")
        #expect(monitor.view()["c"]?.up == false && !monitor.hasFirstRound, "a new site is unknown until probed")

        let directory = NSTemporaryDirectory() + "tdn-health-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try monitor.save(to: directory + "/health.json")
        let restarted = HealthMonitor(clock: { clock.now })
        let saved = try #require(try HealthMonitor.loadSaved(from: directory + "/health.json"))
        restarted.restore(saved)
        restarted.configure([ProbeTarget(site: "a", interval: 5), ProbeTarget(site: "b", interval: 5)])
        #expect(restarted.hasFirstRound, "warm start: no site waits for a first probe")
        #expect(restarted.view()["a"]?.up == true)
        #expect(restarted.view()["b"]?.up == false && restarted.status().first { $0.site == "b" }?.forced == "drain")
        let missing = try HealthMonitor.loadSaved(from: directory + "/missing.json")
        #expect(missing == nil)
        writeText(directory + "/bad.json", "{not json")
        #expect(throws: (any Error).self) { _ = try HealthMonitor.loadSaved(from: directory + "/bad.json") }
    }

    func writeText(_ path: String, _ text: String) {
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
    }
}
