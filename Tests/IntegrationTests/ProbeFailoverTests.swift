import AsyncHTTPClient
import FakeEdge
import Foundation
import NIOCore
import TDNDNS
import TDNTestSupport
import Testing

/// A running tdnd probing fake vLLM edges: failover, recovery, full sites, models, forced
/// states, reload, warm start, `/status` and `/metrics`, seen through `dig` and HTTP.
@Suite("Probes steer answers end to end", .serialized, .timing)
struct ProbeFailoverTests {
    static let interval = 0.5
    static let timeout = 0.3
    static let fall = 2
    static let rise = 2
    static let token = "test-admin-token-0123456789"

    static let zone = ZoneFixture.apex()

    /// Two EU sites: `near` (Frankfurt, where the client is) and `far` (Berlin); `probes` the
    /// probe defaults (these tests' own when nil).
    static func policy(
        fleet: FakeEdgeFleet, whenAllDown: String = "last-known-good", ttl: Int = 30, probes: String? = nil
    ) -> String {
        let probes =
            probes ?? "{interval: \(interval), timeout: \(timeout), jitter: 0.05, rise: \(rise), fall: \(fall)}"

        return """
            zone: p.example
            jurisdictions: {eu: [DE]}
            rules: [{clients-in: eu, served-in: [eu]}]
            networks: [{name: lab, prefix: 127.0.0.0/8, country: DE, lat: 50.11, lon: 8.68}]
            near-equal-ms: 0
            probe-defaults:
              all: \(probes)
            health: {when-all-down: \(whenAllDown), unsettled-ttl: 2}
            sites:
              near: {tier: edge, location: {lat: 50.11, lon: 8.68, country: DE}, jurisdiction: eu, ipv4: [192.0.2.1], probe: \(fleet.probeSettings("near"))}
              far: {tier: edge, location: {lat: 52.52, lon: 13.40, country: DE}, jurisdiction: eu, ipv4: [192.0.2.2], probe: \(fleet.probeSettings("far"))}
            models:
              m-7b: {size: 7b, ttl: \(ttl), answers: 1}
            """
    }

    struct Setup {
        let directory: String
        let fleet: FakeEdgeFleet
        var daemon: DaemonProcess
        var dnsPort: Int
        var statusPort: Int
        var http: HTTPClient { HTTPClient.shared }

        /// `dig +short` of the model's A record.
        func answer() async throws -> String {
            let result = try await run(
                "/usr/bin/dig",
                ["+short", "+tries=1", "+time=1", "@127.0.0.1", "-p", "\(dnsPort)", "m-7b.p.example", "A"])
            return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        /// Polls `dig` until it answers `expected`; returns the seconds it took (nil: not within `limit`).
        func waitForAnswer(_ expected: String, limit: Double) async throws -> Double? {
            let start = Date()
            while Date().timeIntervalSince(start) < limit {
                if try await answer() == expected { return Date().timeIntervalSince(start) }
                try await Task.sleep(for: .milliseconds(50))
            }
            return nil
        }

        func get(_ path: String) async throws -> (Int, String) {
            let response = try await http.execute(
                HTTPClientRequest(url: "http://127.0.0.1:\(statusPort)\(path)"), timeout: .seconds(5))
            return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 22)))
        }

        func force(
            _ site: String, _ state: String, token: String? = ProbeFailoverTests.token
        ) async throws -> (Int, String) {
            var request = HTTPClientRequest(
                url: "http://127.0.0.1:\(statusPort)/admin/sites/\(site)/force?state=\(state)")
            request.method = .POST
            if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
            let response = try await http.execute(request, timeout: .seconds(5))
            return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 16)))
        }

        /// One site's entry of `/status`.
        func status(_ site: String) async throws -> [String: Any] {
            let (_, body) = try await get("/status")
            let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            let sites = object?["sites"] as? [[String: Any]] ?? []
            return sites.first { $0["site"] as? String == site } ?? [:]
        }

        /// A sample's value in `/metrics` (the line that starts with `series`).
        func metric(_ series: String) async throws -> Double? {
            let (_, body) = try await get("/metrics")
            let line = body.split(separator: "\n").first { $0.hasPrefix(series + " ") }
            return line.flatMap { Double($0.split(separator: " ").last ?? "") }
        }

        func stop() async {
            await terminate(daemon.process)
            await fleet.stop()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    static func start(whenAllDown: String = "last-known-good") async throws -> Setup {
        let directory = makeTemporaryDirectory()
        let fleet = try await FakeEdgeFleet.start(sites: ["near", "far"], models: ["m-7b"])
        writeFile(directory + "/p.example.zone", zone)
        writeFile(directory + "/policy.yaml", policy(fleet: fleet, whenAllDown: whenAllDown))
        writeFile(directory + "/tdnd.yaml", daemonConfig("state-dir: state\nadmin-token: \(token)\n"))
        return try await launch(directory: directory, fleet: fleet)
    }

    /// `body` against a started daemon and its edges, stopped afterwards (also when it throws).
    static func withDaemon(
        whenAllDown: String = "last-known-good", _ body: (inout Setup) async throws -> Void
    ) async throws {
        var setup = try await start(whenAllDown: whenAllDown)
        do { try await body(&setup) } catch {
            await setup.stop()
            throw error
        }
        await setup.stop()
    }

    static func launch(directory: String, fleet: FakeEdgeFleet) async throws -> Setup {
        let daemon = try DaemonProcess(config: directory + "/tdnd.yaml")
        let dns = try #require(await daemon.dnsPort(), "\(daemon.log)")
        let status = try #require(await daemon.port(after: "status server on 127.0.0.1:"), "\(daemon.log)")
        return Setup(directory: directory, fleet: fleet, daemon: daemon, dnsPort: dns, statusPort: status)
    }

    @Test func failoverRecoveryFullAndModels() async throws {
        try await Self.withDaemon { setup in
            #expect(setup.daemon.log.contains("health: probing 2 sites before serving"), "cold start probes first")
            #expect(try await setup.answer() == "192.0.2.1", "the near site, probed up before the listeners opened")

            // near fails: out of answers within interval × fall + timeout (+1 s).
            setup.fleet.set("near", .failing)
            let bound = Self.interval * Double(Self.fall) + Self.timeout + 1
            let failover = try await setup.waitForAnswer("192.0.2.2", limit: bound + 2)
            print("failover: \(failover.map { String(format: "%.2f", $0) } ?? "none") s (bound \(bound) s)")
            #expect(
                failover != nil && failover! <= bound,
                "failover took \(failover.map { String($0) } ?? "forever"), bound \(bound) s")
            let down = try await setup.status("near")
            #expect(down["state"] as? String == "down")
            #expect((down["why"] as? String)?.contains("HTTP 503") == true, "\(down)")
            #expect(try await setup.metric("tdn_site_up{site=\"near\"}") == 0)
            #expect(try await setup.metric("tdn_site_up{site=\"far\"}") == 1)

            // near recovers: back after `rise` successes.
            setup.fleet.set("near", .healthy)
            let recovery = try await setup.waitForAnswer("192.0.2.1", limit: 5)
            print(
                "recovery: \(recovery.map { String(format: "%.2f", $0) } ?? "none") s (rise \(Self.rise) × interval \(Self.interval) s)"
            )
            #expect(
                recovery != nil && recovery! <= Self.interval * Double(Self.rise) + 1,
                "recovery took \(String(describing: recovery))")
            #expect(try await setup.metric("tdn_site_state_changes_total{site=\"near\"}") ?? 0 >= 2)

            // near is full: new answers go to far; room again: back.
            setup.fleet.set("near", .full)
            #expect(try await setup.waitForAnswer("192.0.2.2", limit: 3) != nil)
            let full = try await setup.status("near")
            #expect(full["state"] as? String == "full" && full["load"] as? Double == 1, "\(full)")
            setup.fleet.set("near", .healthy)
            #expect(try await setup.waitForAnswer("192.0.2.1", limit: 3) != nil)

            // near unloads the model: not sent its clients while it does not list it.
            setup.fleet.setModels("near", ["other-model"])
            #expect(try await setup.waitForAnswer("192.0.2.2", limit: 3) != nil)
            setup.fleet.setModels("near", ["m-7b"])
            #expect(try await setup.waitForAnswer("192.0.2.1", limit: 3) != nil)

            // Monitoring saw it all: probes, DNS queries by type and rcode, steered answers.
            let (code, metrics) = try await setup.get("/metrics")
            #expect(code == 200)
            for series in [
                "tdn_probes_total{kind=\"http\",result=\"failure\"}", "tdn_probe_rtt_seconds_bucket{site=\"near\"",
                "tdn_site_load{site=\"near\"}", "tdn_site_last_success_timestamp_seconds{site=\"far\"}",
                "tdn_dns_queries_total{transport=\"udp\",qtype=\"A\",rcode=\"NOERROR\"}",
                "tdn_steered_answers_total{model=\"m-7b\",site=\"far\"}",
                "tdn_steered_answers_total{model=\"m-7b\",site=\"near\"}",
                "tdn_probe_schedule_lag_seconds_bucket",
            ] {
                #expect(metrics.contains(series), "missing \(series)")
            }
        }
    }

    @Test func forcedStatesSurviveReloadAndRestartWithWarmStart() async throws {
        try await Self.withDaemon { setup in
            #expect(try await setup.answer() == "192.0.2.1")
            #expect(try await setup.force("near", "drain", token: nil).0 == 401)
            #expect(try await setup.force("near", "drain", token: "wrong-token-0123456789").0 == 401)
            #expect(try await setup.force("nowhere", "drain").0 == 404)
            #expect(try await setup.force("near", "sideways").0 == 400)
            // Through the CLI, as an operator would.
            let cli = try await run(
                tdndPath,
                [
                    "force", "near", "drain", "--config", setup.directory + "/tdnd.yaml", "--status",
                    "127.0.0.1:\(setup.statusPort)",
                ])
            #expect(cli.status == 0 && cli.output.contains("near: forced drain"), "\(cli)")
            #expect(try await setup.waitForAnswer("192.0.2.2", limit: 2) != nil, "drained: no new clients")
            #expect(try await setup.status("near")["state"] as? String == "drain")

            // A reload (new TTL) keeps the forced state and the measured health.
            writeFile(setup.directory + "/policy.yaml", Self.policy(fleet: setup.fleet, ttl: 31))
            kill(setup.daemon.process.processIdentifier, SIGHUP)
            #expect(await setup.daemon.waitFor("reloaded"))
            #expect(try await setup.answer() == "192.0.2.2")
            #expect(try await setup.status("near")["forced"] as? String == "drain")

            // Restart: the saved state is a warm start, the forced state is kept.
            #expect(await terminate(setup.daemon.process), "SIGTERM stops tdnd")
            #expect(FileManager.default.fileExists(atPath: setup.directory + "/state/health.json"))
            setup = try await Self.launch(directory: setup.directory, fleet: setup.fleet)
            #expect(setup.daemon.log.contains("health: warm start"))
            #expect(!setup.daemon.log.contains("before serving"), "no cold-start round with a saved state")
            #expect(try await setup.answer() == "192.0.2.2", "still drained after the restart")
            #expect(try await setup.force("near", "auto").0 == 200)
            #expect(try await setup.waitForAnswer("192.0.2.1", limit: 2) != nil)
        }
    }

    @Test func everySiteDownAnswersTheLastKnownGood() async throws {
        try await Self.withDaemon { setup in
            setup.fleet.set("near", .failing)
            #expect(try await setup.waitForAnswer("192.0.2.2", limit: 4) != nil)
            setup.fleet.set("far", .dead)
            // far went down last: it is the last known good, answered rather than nothing.
            try await Task.sleep(for: .seconds(Self.interval * Double(Self.fall) + Self.timeout + 1))
            #expect(try await setup.status("far")["state"] as? String == "down")
            #expect(try await setup.answer() == "192.0.2.2")
        }
    }

    @Test func everySiteDownWithDenyAnswersNothing() async throws {
        try await Self.withDaemon(whenAllDown: "deny") { setup in
            setup.fleet.set("near", .failing)
            setup.fleet.set("far", .failing)
            let denial = try await setup.waitForAnswer("", limit: 4)
            #expect(denial != nil, "the denial: NOERROR without addresses")
        }
    }
}

/// SIGTERM, then SIGKILL after 5 s; whether SIGTERM alone stopped it.
@discardableResult
func terminate(_ process: Process) async -> Bool {
    guard process.isRunning else { return true }
    kill(process.processIdentifier, SIGTERM)
    for _ in 0..<100 where process.isRunning { try? await Task.sleep(for: .milliseconds(50)) }
    guard process.isRunning else { return true }
    kill(process.processIdentifier, SIGKILL)
    for _ in 0..<100 where process.isRunning { try? await Task.sleep(for: .milliseconds(50)) }
    return false
}
