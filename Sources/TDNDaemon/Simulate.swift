import ArgumentParser
import ConfigFile
import Foundation
import GeoPolicy

/// `tdnd simulate SCENARIO.yaml`: a scenario run in simulated time under each steering rule.
struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Run a load scenario in simulated time under each steering rule and print optimal share, overload, sovereignty violations, answer flips and recovery."
    )

    @OptionGroup var output: OutputOptions

    @Argument(help: "A scenario file (see sim/ and README \"Simulator\").")
    var scenario: String

    @Option(help: "A site whose load and share of demand to record every 5 s (repeatable).")
    var trace: [String] = []

    @Option(help: "Write the traced sites' samples as CSV (rule,time,site,load,share) to this file.")
    var traceFile: String?

    func run() async throws {
        let scenario = try loaded(Scenario.load(path: self.scenario))
        let policy = try loaded(PolicyLoader.load(path: scenario.policy))
        let simulator = try loaded(
            Result { () throws(ConfigErrors) in
                try Simulator(scenario: scenario, policy: policy, geo: try GeoDatabase(path: scenario.geoip))
            })
        for site in trace where simulator.siteIndex[site] == nil {
            throw ValidationError("--trace \(site): no site \(site) in \(scenario.policy)")
        }
        let figures = SteeringRule.allCases.map { simulator.run($0, tracing: trace) }
        if let traceFile {
            var csv = "rule,time,site,load,share\n"
            for run in figures {
                for sample in run.trace ?? [] {
                    csv += "\(run.rule.rawValue),\(formatNumber(sample.time)),\(sample.site),"
                    csv += String(format: "%.4f,%.5f\n", sample.load, sample.share)
                }
            }
            do { try csv.write(toFile: traceFile, atomically: true, encoding: .utf8) } catch {
                throw ValidationError("--trace-file \(traceFile): \(error.localizedDescription)")
            }
        }
        if output.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try encoder.encode(figures), as: UTF8.self))
            return
        }
        print(Self.table(figures, scenario: scenario, simulator: simulator))
    }

    static func table(_ figures: [SimulationFigures], scenario: Scenario, simulator: Simulator) -> String {
        func cell(_ text: String, _ width: Int) -> String { text.padding(toLength: width, withPad: " ", startingAt: 0) }
        var lines = [
            "\(scenario.file): \(simulator.policy.sites.count) sites, \(simulator.classes.count) location classes, "
                + "\(simulator.models.count) models, \(formatNumber(scenario.duration)) s",
            cell("rule", 16) + cell("optimal", 9) + cell("overload", 10) + cell("sovereignty", 13)
                + cell("flips/class-h", 15) + cell("lost", 8) + "recovery (s)",
        ]
        for run in figures {
            let recovery = run.recoverySeconds.map { $0.seconds.map(formatNumber) ?? "never" }.joined(separator: ", ")
            lines.append(
                cell(run.rule.rawValue, 16) + cell(String(format: "%.4f", run.optimalShare), 9)
                    + cell(String(format: "%.4f", run.overloadShare), 10) + cell(String(run.sovereigntyViolations), 13)
                    + cell(String(format: "%.3f", run.answerFlipsPerClassHour), 15)
                    + cell(String(format: "%.4f", run.lostShare), 8) + (recovery.isEmpty ? "-" : recovery))
        }
        return lines.joined(separator: "\n")
    }
}
