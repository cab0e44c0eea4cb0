import ArgumentParser
import FakeEdge

#if canImport(Glibc)
import Glibc
#endif

/// `tdn-fake-edge`: serves pretend vLLM edges on loopback (benchmark and demo).
@available(macOS 10.15, *)
struct FakeEdgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tdn-fake-edge",
        abstract: "Serve pretend vLLM edges: /SITE/health, /SITE/metrics, /SITE/v1/models.")

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks one; the port is printed).")
    var port = 0

    @Option(help: "Sites: names (fra1,par1) or a count (10000 makes site0 … site9999).")
    var sites = "1000"

    @Option(help: "Models every site lists on /v1/models, comma-separated.")
    var models = ""

    @Option(help: "Event-loop threads.")
    var threads = 1

    func run() async throws { try await execute() }

    func execute() async throws {
        let names =
            Int(sites).map { count in (0..<count).map { "site\($0)" } } ?? sites.split(separator: ",").map(String.init)
        let fleet = try await FakeEdgeFleet.start(
            host: host, port: port, sites: names, models: models.split(separator: ",").map(String.init),
            threads: threads)
        let line = "tdn-fake-edge: \(names.count) sites on \(fleet.host):\(fleet.port)\n"
        _ = line.withCString { write(1, $0, strlen($0)) }
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}

do {
    let command = try FakeEdgeCommand.parse()
    try await command.execute()
} catch {
    FakeEdgeCommand.exit(withError: error)
}
