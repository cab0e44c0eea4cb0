import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization
import TDNDNS

/// The configuration being served, as the status server needs it: updated by every successful
/// load, just before the reloader publishes its snapshot.
final class ServingState: Sendable {
    private let current: Mutex<ConfigurationLoader.Loaded?> = Mutex(nil)

    func set(_ loaded: ConfigurationLoader.Loaded) { current.withLock { $0 = loaded } }
    var loaded: ConfigurationLoader.Loaded? { current.withLock { $0 } }
}

/// The status HTTP server (default 127.0.0.1:9153): `/healthz` for tdnd itself and
/// `/explain?host=…&client=…`, the decision trace of `tdnd explain --json`.
enum StatusServer {
    static func make(address: ListenAddress, state: ServingState, logger: Logger) -> some Service {
        let router = Router()
        router.get("healthz") { _, _ -> String in
            "ok\n"
        }
        router.get("explain") { request, _ -> Response in
            guard let host = request.uri.queryParameters["host"], let client = request.uri.queryParameters["client"] else {
                return text(.badRequest, "explain needs host and client query parameters, e.g. /explain?host=llama-13b.tdn.example&client=5.9.1.0/24\n")
            }
            guard let loaded = state.loaded else { return text(.serviceUnavailable, "not loaded yet\n") }
            do {
                let report = try ExplainReport.make(loaded: loaded, hostname: String(host), client: String(client))
                var response = Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(data: try report.json())))
                response.headers[.contentType] = "application/json"
                return response
            } catch let failure as ExplainReport.Failure {
                return text(.badRequest, failure.description + "\n")
            }
        }
        var statusLogger = logger
        statusLogger.logLevel = max(logger.logLevel, .notice)
        return Application(
            router: router,
            configuration: .init(address: .hostname(address.host, port: address.port), serverName: "tdnd"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? address.port
                logger.info("status server on \(ListenAddress(host: address.host, port: port))")
            },
            logger: statusLogger)
    }

    private static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        var response = Response(status: status, body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
        response.headers[.contentType] = "text/plain; charset=utf-8"
        return response
    }
}
