import Foundation
import TDNDNS
import TDNTestSupport
import Testing

@testable import TDNDaemon

/// The `$ dig …` examples of README.md, run against the bundled zones; each must print exactly
/// the lines the README shows under it.
@Suite("README examples")
struct ReadmeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    struct Example {
        var command: [String]
        var expected: [String]
    }

    static func examples() throws -> [Example] {
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        var examples: [Example] = []
        var current: Example? = nil
        for line in readme.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("$ dig ") {
                if let current { examples.append(current) }
                current = Example(command: line.dropFirst(2).split(separator: " ").map(String.init), expected: [])
            } else if line.hasPrefix("```") || line.hasPrefix("$ ") {
                if let done = current { examples.append(done) }
                current = nil
            } else if current != nil {
                current!.expected.append(String(line))
            }
        }
        return examples
    }

    /// The bundled demo (tdnd.yaml: zones, policy and the geo database `make geoip` builds).
    @Test func digExamplesGiveTheAnswersShown() async throws {
        let config = try DaemonConfig.load(path: Self.root.appendingPathComponent("tdnd.yaml").path)
        let server = try await TestServer.start(
            zones: [:], threads: 1, load: { _ in ConfigurationLoader(config: config).load() },
            configure: {
                $0.listen = [ListenAddress(host: "127.0.0.1", port: 0), ListenAddress(host: "::1", port: 0)]
            })
        defer { Task { await server.stop() } }
        let examples = try Self.examples()
        #expect(examples.count >= 5)
        for example in examples {
            let arguments = example.command.dropFirst().map { $0 == "5353" ? String(server.port) : $0 }
            let result = try await run("/usr/bin/dig", Array(arguments) + ["+time=2", "+tries=1"])
            let lines = result.output.split(separator: "\n").map(String.init)
            #expect(lines == example.expected, "\(example.command.joined(separator: " "))")
        }
    }
}
