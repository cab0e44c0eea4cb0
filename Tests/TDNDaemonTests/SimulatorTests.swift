import ConfigFile
import Foundation
import GeoPolicy
import TDNTestSupport
import Testing

@testable import TDNDaemon

/// `tdnd simulate`: the demo policy and the real tor-geoipdb ranges in simulated time.
@Suite("Simulator", .cpuBound)
struct SimulatorTests {
    /// A short run of the demo network: a site fails for a while, the load figure of another
    /// goes stale, and one model gets a flash crowd.
    static func scenario(seed: Int = 7, events: String) -> String {
        """
        policy: \(projectRoot)/zones/tdn.example.policy.yaml
        geoip: \(projectRoot)/build/geoip/tor-country.mmdb
        seed: \(seed)
        duration: 180
        resolvers: 300
        shards: 4
        demand: {llama-13b: 2000, eurollm-9b: 300}
        capacity: {default: 800, fra1: 300}
        events:
        \(events)
        """
    }

    static let events = """
          - {at: 60, fail: [fra1], for: 90}
          - {at: 100, stale: [par1], for: 40}
          - {at: 160, flash-crowd: llama-13b, factor: 2}
        """

    func simulator(_ text: String) throws -> Simulator {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        writeFile(directory + "/s.yaml", text)
        let scenario = try Scenario.load(path: directory + "/s.yaml").get()
        let policy = try PolicyLoader.load(path: scenario.policy).get()
        return try Simulator(scenario: scenario, policy: policy, geo: try GeoDatabase(path: scenario.geoip))
    }

    @Test func theSameSeedGivesTheSameFigures() throws {
        // A second simulator loaded from the same files: nothing may hang on the order of a
        // dictionary or a set.
        let simulators = [
            try simulator(Self.scenario(events: Self.events)), try simulator(Self.scenario(events: Self.events)),
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        for rule in SteeringRule.allCases {
            let first = String(decoding: try encoder.encode(simulators[0].run(rule)), as: UTF8.self)
            let again = String(decoding: try encoder.encode(simulators[1].run(rule)), as: UTF8.self)
            #expect(first == again, "\(rule)")
        }
        // A traced site's samples: every 5 s of the 180, its load and share of demand.
        let traced = try #require(simulators[0].run(.budgets, tracing: ["fra1"]).trace)
        #expect(traced.count == 36 && traced.allSatisfy { $0.site == "fra1" && $0.load >= 0 && $0.share <= 1 })
        #expect(traced.contains { $0.load > 0 }, "fra1 serves the EU's nearest clients")
        // Another seed moves the probe schedule, and with it the figures.
        let other = try simulator(Self.scenario(seed: 8, events: Self.events)).run(.fullNotFull)
        #expect(
            String(decoding: try encoder.encode(other), as: UTF8.self)
                != String(decoding: try encoder.encode(simulators[0].run(.fullNotFull)), as: UTF8.self))
    }

    @Test func tdndNeverLeavesTheAllowedJurisdictionsAndTheBaselineDoes() throws {
        let simulator = try simulator(Self.scenario(events: Self.events))
        // The tor ranges give one class per country, weighted by addresses: the US and the EU
        // hold most of them.
        #expect(simulator.classes.count > 200)
        let us = simulator.classes.firstIndex { simulator.geography.locations[$0].country == "US" }
        #expect(us.map { simulator.weights[$0] > 0.2 } == true, "the US holds over a fifth of IPv4")
        let tdnd = simulator.run(.fullNotFull)
        let nearest = simulator.run(.nearest)
        let budgets = simulator.run(.budgets)
        #expect(tdnd.sovereigntyViolations == 0)
        #expect(budgets.sovereigntyViolations == 0)
        // Budgets move demand a shard at a time, and only off sites over their high-water mark.
        #expect(budgets.answerFlipsPerClassHour < tdnd.answerFlipsPerClassHour, "\(budgets) vs \(tdnd)")
        // eurollm-9b is served in the EU only, whoever asks; the nearest-site rule ignores that.
        #expect(nearest.sovereigntyViolations > 0)
        // Both notice the failure within fall × interval plus a TTL.
        for run in [tdnd, nearest] {
            let recovery = try #require(run.recoverySeconds.first?.seconds, "\(run.rule) never recovered")
            #expect(recovery <= 3 * 2 + 30 + 2, "\(run.rule): \(recovery) s")
        }
        // Load-aware steering keeps more clients on sites with room than distance alone.
        #expect(tdnd.overloadShare < nearest.overloadShare, "\(tdnd) vs \(nearest)")
    }

    @Test func scenarioErrorsNameTheFileAndLine() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        writeFile(
            directory + "/bad.yaml",
            """
            policy: p.yaml
            duration: -5
            demand: {llama-13b: many}
            events:
              - {at: 10, fail: [fra1], stale: [par1]}
              - {fail: [fra1]}
              - {at: 20, flash-crowd: llama-13b}
            """)
        guard case .failure(let errors) = Scenario.load(path: directory + "/bad.yaml") else {
            Issue.record("a broken scenario loaded")
            return
        }
        let text = errors.errors.map(\.description)
        let file = directory + "/bad.yaml"
        #expect(text.contains { $0.hasPrefix("\(file):1:") && $0.contains("missing geoip") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("\(file):2:") && $0.contains("duration") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("\(file):3:") && $0.contains("demand.llama-13b") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("\(file):5:") && $0.contains("expected one of") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("\(file):6:") && $0.contains("missing at") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("\(file):7:") && $0.contains("missing factor") }, "\(text)")
        #expect(text.count == 6, "one error each: \(text)")
    }

    @Test func unknownSitesAndModelsAreNamed() throws {
        let text = Self.scenario(events: "  - {at: 10, fail: [fra9]}")
            .replacingOccurrences(of: "fra1: 300", with: "nowhere1: 300")
            .replacingOccurrences(of: "eurollm-9b: 300", with: "gpt-9: 300")
        #expect(throws: ConfigErrors.self) { try simulator(text) }
        do { _ = try simulator(text) } catch let errors as ConfigErrors {
            let all = errors.errors.map(\.description).joined(separator: "\n")
            #expect(all.contains("no site nowhere1"), "\(all)")
            #expect(all.contains("no model gpt-9"), "\(all)")
            #expect(all.contains("events[0]: no site fra9"), "\(all)")
        }
    }
}
