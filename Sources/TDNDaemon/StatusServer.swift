import Foundation
import HealthProbe
import Hummingbird
import Ledger
import Logging
import ServiceLifecycle
import Synchronization
import TDNDNS

/// What is served, with one way in (`publish`): the loaded configuration and the store its
/// snapshot is published through, changed together by reloads and health changes alike (both
/// under `LiveState.lock`, so never out of order).
final class ServingState: Sendable {
    private struct Served {
        var loaded: ConfigurationLoader.Loaded
        var store: SnapshotStore
    }

    private let current: Mutex<Served?> = Mutex(nil)

    /// Stores `loaded` and publishes its snapshot, together: the configuration read here is
    /// always the one whose snapshot answers. The first publish makes the store the DNS server
    /// reads; the store is returned.
    @discardableResult
    func publish(_ loaded: ConfigurationLoader.Loaded) -> SnapshotStore {
        current.withLock { served in
            let store = served?.store ?? SnapshotStore(loaded.set.snapshot)
            if served != nil { store.publish(loaded.set.snapshot) }
            served = Served(loaded: loaded, store: store)
            return store
        }
    }

    var loaded: ConfigurationLoader.Loaded? { current.withLock { $0?.loaded } }
}

/// The status HTTP server (default 127.0.0.1:9153): `/healthz` for tdnd itself,
/// `/metrics` (Prometheus), `/status` (every probed site, JSON), `/explain?host=…&client=…`
/// (the decision trace of `tdnd explain --json`) and, with an admin token configured,
/// `POST /admin/sites/{site}/force?state=up|down|drain|auto` (and `POST /admin/force?state=…&sites=A,B`
/// for several at once).
enum StatusServer {
    static func make(address: ListenAddress, live: LiveState, limits: HTTPLimits, logger: Logger) -> some Service {
        let state = live.serving
        let exporter = QueryStatsExporter(stats: live.queryStats)
        let router = Router()
        router.get("healthz") { _, _ -> String in
            "ok\n"
        }
        router.get("metrics") { _, _ -> Response in
            exporter.export()
            var response = Response(
                status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(bytes: MetricsSetup.registry.emitToBuffer())))
            response.headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return response
        }
        router.get("status") { _, _ -> Response in
            let body = StatusReport.make(live: live)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            var response = Response(
                status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(data: try encoder.encode(body))))
            response.headers[.contentType] = "application/json"
            return response
        }
        /// Forces sites and answers once the answers reflect it (the state is saved after).
        @Sendable func force(_ request: Request, sites: [String]) async -> Response {
            guard let token = live.adminToken else {
                return text(.forbidden, "admin endpoints are off: set admin-token in the configuration\n")
            }
            let given =
                request.headers[.authorization].map { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : "" } ?? ""
            guard constantTimeEqual(given, token) else {
                return text(.unauthorized, "a valid admin token is needed (Authorization: Bearer TOKEN)\n")
            }
            let value = request.uri.queryParameters["state"].map(String.init) ?? ""
            let forced: ForcedState?
            if value == "auto" {
                forced = nil
            } else if let state = ForcedState(rawValue: value) {
                forced = state
            } else {
                return text(.badRequest, "state must be up, down, drain or auto\n")
            }
            guard !sites.isEmpty, !sites.contains(where: \.isEmpty) else {
                return text(.badRequest, "name the sites: sites=ID,ID,…\n")
            }
            let unknown = live.monitor.force(sites: sites, forced)
            guard unknown.isEmpty else {
                return text(
                    .notFound,
                    "no probed site \(unknown.map { "'\($0)'" }.joined(separator: ", ")) (only probed sites can be forced); nothing was forced\n"
                )
            }
            // Answers first, then the saved state: the operator's change is live sooner.
            await live.rebuild()
            live.save()
            let named = sites.count == 1 ? sites[0] : "\(sites.count) sites"
            logger.notice("\(named) forced \(value) by an operator")
            return text(
                .ok, "\(named): \(value == "auto" ? "forced state cleared, probes decide" : "forced \(value)")\n")
        }
        router.post("admin/sites/:site/force") { request, context -> Response in
            await force(request, sites: [context.parameters.get("site") ?? ""])
        }
        // Many sites at once (a region drained, or failed): one change, one re-steering.
        router.post("admin/force") { request, _ -> Response in
            let list = request.uri.queryParameters["sites"].map(String.init) ?? ""
            return await force(
                request, sites: list.split(separator: ",", omittingEmptySubsequences: false).map(String.init))
        }
        router.get("explain") { request, _ -> Response in
            guard let host = request.uri.queryParameters["host"], let client = request.uri.queryParameters["client"]
            else {
                return text(
                    .badRequest,
                    "explain needs host and client query parameters, e.g. /explain?host=llama-13b.tdn.example&client=5.9.1.0/24\n"
                )
            }
            guard let loaded = state.loaded else { return text(.serviceUnavailable, "not loaded yet\n") }
            do {
                // Under the snapshot lock: the live budgets are read.
                let report = try live.lock.withLock { _ throws(ExplainReport.Failure) in
                    try ExplainReport.make(
                        loaded: loaded, hostname: String(host), client: String(client),
                        loads: live.monitor.freshLoads())
                }
                var response = Response(
                    status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(data: try report.json())))
                response.headers[.contentType] = "application/json"
                return response
            } catch let failure as ExplainReport.Failure {
                return text(.badRequest, failure.description + "\n")
            }
        }
        return httpService(
            router, address: address, serverName: "tdnd", what: "status server", limits: limits, logger: logger)
    }

    private static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        var response = Response(status: status, body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
        response.headers[.contentType] = "text/plain; charset=utf-8"
        return response
    }
}

/// `/status`: every site of the policy with its state and why.
struct StatusReport: Codable {
    struct Probes: Codable {
        var targets: Int
        var started: Int
        var completed: Int
        var lagP50Milliseconds: Double
        var lagP99Milliseconds: Double
        var lagMaxMilliseconds: Double
    }
    var time: String
    var zones: [String]
    var sites: [SiteStatus]
    var probes: Probes

    static func make(live: LiveState) -> StatusReport {
        let loaded = live.serving.loaded
        var sites = live.monitor.status()
        let known = Set(sites.map(\.site))
        let configured = Set(loaded?.probes.map(\.site) ?? [])
        for site in loaded?.policy?.sites ?? [] where !known.contains(site.id) {
            let probed = configured.contains(site.id)
            sites.append(
                SiteStatus(
                    site: site.id, state: probed ? "unknown" : "not probed",
                    why: probed ? "not probed yet" : "no probe configured: counted up", since: 0,
                    sinceText: "never",
                    forced: nil, load: nil, models: nil, lastProbe: "none", lastSuccess: nil, rttMilliseconds: nil,
                    unsettled: false))
        }
        sites.sort { $0.site < $1.site }
        let statistics = live.scheduler.statistics
        return StatusReport(
            time: ISO8601DateFormatter().string(from: Date()),
            zones: loaded?.set.snapshot.zones.map { "\($0.origin) serial \($0.serial)" } ?? [],
            sites: sites,
            probes: Probes(
                targets: known.count, started: statistics.started, completed: statistics.completed,
                lagP50Milliseconds: statistics.lagPercentile(0.5) * 1000,
                lagP99Milliseconds: statistics.lagPercentile(0.99) * 1000,
                lagMaxMilliseconds: (statistics.lagMax * 1e6).rounded() / 1e3))
    }
}
