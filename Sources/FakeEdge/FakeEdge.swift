import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A fleet of pretend inference edges on one loopback HTTP server, for tests, benchmarks and
/// the demo. Site `S` answers like vLLM under `/S/`: `/S/health`, `/S/metrics` (vLLM's series)
/// and `/S/v1/models` (an OpenAI model list). Each site can be switched while it runs, in
/// process or over HTTP: `POST /S/mode?set=failing`, `POST /S/models?set=a,b`,
/// `POST /S/load?set=0.8`.
public final class FakeEdgeFleet: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        /// 200 on /health, light load.
        case healthy
        /// 503 on /health (the engine reports itself unhealthy).
        case failing
        /// Every answer delayed by `slowDelay` seconds (a probe with a shorter timeout fails).
        case slow
        /// /health 200 but /metrics shows a full engine (queue and KV cache).
        case full
        /// So busy that /health answers only after `slowDelay`, while /metrics shows it full.
        case busy
        /// Connections are closed without an answer.
        case dead
        // Hostile edges: /health answers 200, but what they report cannot be trusted.
        /// A /metrics page and a model list of 5 MB.
        case oversized
        /// /metrics that is not the exposition format; /v1/models that is not JSON.
        case malformed
        /// /metrics with negative and infinite values (an idle-looking engine).
        case negative
        /// A model list of 5,000 ids.
        case manyModels = "many-models"
    }

    public struct Site: Sendable {
        public var mode: Mode = .healthy
        public var models: [String]
        public var slowDelay: Double = 5
        /// A load figure to report while healthy (0 idle … 1 full) through the KV cache, the
        /// signal that then decides; nil: the mode's own light or full figures.
        public var load: Double?
        /// Requests answered, by path suffix (health, metrics, models).
        public var requests: [String: Int] = [:]
    }

    public let host: String
    public let port: Int
    private let channel: Channel
    private let group: MultiThreadedEventLoopGroup
    private let sites: Mutex<[String: Site]>
    /// Models every site lists unless told otherwise.
    private let defaultModels: [String]

    private init(
        host: String, port: Int, channel: Channel, group: MultiThreadedEventLoopGroup, sites: [String: Site],
        defaultModels: [String]
    ) {
        self.host = host
        self.port = port
        self.channel = channel
        self.group = group
        self.sites = Mutex(sites)
        self.defaultModels = defaultModels
    }

    /// Starts the server (port 0 picks a free one). Unknown sites answer 404.
    public static func start(
        host: String = "127.0.0.1", port: Int = 0, sites: [String], models: [String] = [], threads: Int = 1
    ) async throws -> FakeEdgeFleet {
        let table = Dictionary(sites.map { ($0, Site(models: models)) }, uniquingKeysWith: { first, _ in first })
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let box = TableBox()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(FakeEdgeHandler(fleet: box))
                }
            }
            .bind(host: host, port: port).get()
        let fleet = FakeEdgeFleet(
            host: host, port: channel.localAddress?.port ?? port, channel: channel, group: group, sites: table,
            defaultModels: models)
        box.fleet.withLock { $0 = fleet }
        return fleet
    }

    public func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    /// The base URL of a site (`http://127.0.0.1:PORT/SITE`).
    public func url(_ site: String) -> String { "http://\(host.contains(":") ? "[\(host)]" : host):\(port)/\(site)" }

    /// A policy's `probe:` for `site` (YAML flow style): health, metrics and models.
    public func probeSettings(_ site: String) -> String {
        "{http: \"\(url(site))/health\", metrics: \"\(url(site))/metrics\", models: \"\(url(site))/v1/models\"}"
    }

    public func set(_ site: String, _ mode: Mode) {
        sites.withLock { $0[site, default: Site(models: defaultModels)].mode = mode }
    }

    public func setModels(_ site: String, _ models: [String]) {
        sites.withLock { $0[site, default: Site(models: defaultModels)].models = models }
    }

    /// The load a healthy site reports from now on (nil: the mode's own).
    public func setLoad(_ site: String, _ load: Double?) {
        sites.withLock { $0[site, default: Site(models: defaultModels)].load = load }
    }

    public func setSlowDelay(_ site: String, _ seconds: Double) {
        sites.withLock { $0[site, default: Site(models: defaultModels)].slowDelay = seconds }
    }

    public func site(_ id: String) -> Site? { sites.withLock { $0[id] } }

    /// Total requests answered, over every site.
    public var requestCount: Int { sites.withLock { $0.values.reduce(0) { $0 + $1.requests.values.reduce(0, +) } } }

    /// What a request gets: nil to close the connection; a delay in seconds before answering.
    func answer(path: String, method: String = "GET") -> (status: Int, body: String, delay: Double)? {
        if method == "POST" { return control(path) }
        let parts = path.split(separator: "?").first.map { $0.split(separator: "/", maxSplits: 1) } ?? []
        guard parts.count == 2 else { return (404, "no such site\n", 0) }
        let id = String(parts[0])
        let rest = String(parts[1])
        return sites.withLock { table -> (Int, String, Double)? in
            guard var site = table[id] else { return (404, "no such site\n", 0) }
            let kind =
                rest == "health" ? "health" : rest == "metrics" ? "metrics" : rest == "v1/models" ? "models" : "other"
            site.requests[kind, default: 0] += 1
            table[id] = site
            if site.mode == .dead { return nil }
            let delay = site.mode == .slow || (site.mode == .busy && kind == "health") ? site.slowDelay : 0
            switch kind {
            case "health":
                return site.mode == .failing ? (503, "engine unhealthy\n", delay) : (200, "", delay)
            case "metrics":
                switch site.mode {
                case .oversized:
                    return (200, Self.metrics(full: false) + String(repeating: "# padding\n", count: 500_000), delay)
                case .malformed: return (200, "vllm:num_requests_running {{{ not a sample\n\u{0}\u{1}", delay)
                case .negative: return (200, Self.metrics(full: false, running: -500, cache: "-Inf"), delay)
                case .healthy where site.load != nil:
                    // vLLM's KV cache counts as full at 0.95 (`CapacityModel.vLLM`).
                    let cache = min(1, max(0, site.load ?? 0)) * 0.95
                    return (200, Self.metrics(full: false, cache: "\(cache)"), delay)
                default: return (200, Self.metrics(full: site.mode == .full || site.mode == .busy), delay)
                }
            case "models":
                switch site.mode {
                case .oversized:
                    return (
                        200,
                        Self.modelList(
                            site.models
                                + (0..<50_000).map { "padding-model-\($0)-" + String(repeating: "p", count: 60) }),
                        delay
                    )
                case .malformed: return (200, "{\"object\":\"list\",\"data\":[{\"id\":", delay)
                case .manyModels: return (200, Self.modelList(site.models + (0..<5_000).map { "model-\($0)" }), delay)
                default: return (200, Self.modelList(site.models), delay)
                }
            default:
                return (404, "not found\n", delay)
            }
        }
    }

    /// `POST /S/mode?set=MODE` and `POST /S/models?set=a,b`.
    func control(_ path: String) -> (status: Int, body: String, delay: Double) {
        let pieces = path.split(separator: "?", maxSplits: 1)
        let route = pieces.first?.split(separator: "/") ?? []
        let value = pieces.count > 1 && pieces[1].hasPrefix("set=") ? String(pieces[1].dropFirst(4)) : nil
        guard route.count == 2, let value, site(String(route[0])) != nil else {
            return (
                400,
                "POST /SITE/mode?set=\(Mode.allCases.map(\.rawValue).joined(separator: "|")), /SITE/models?set=a,b or /SITE/load?set=0.8\n",
                0
            )
        }
        let id = String(route[0])
        switch route[1] {
        case "mode":
            guard let mode = Mode(rawValue: value) else { return (400, "unknown mode \(value)\n", 0) }
            set(id, mode)
            return (200, "\(id): \(mode.rawValue)\n", 0)
        case "models":
            setModels(id, value.split(separator: ",").map(String.init))
            return (200, "\(id): models \(value)\n", 0)
        case "load":
            guard let load = Double(value), load >= 0, load <= 1 else {
                return (400, "load: \(value) is not a figure from 0 to 1\n", 0)
            }
            setLoad(id, load)
            return (200, "\(id): load \(value)\n", 0)
        default:
            return (400, "unknown control \(route[1])\n", 0)
        }
    }

    static func modelList(_ models: [String]) -> String {
        let list = models.map { "{\"id\":\"\($0)\",\"object\":\"model\",\"owned_by\":\"vllm\"}" }.joined(separator: ",")
        return "{\"object\":\"list\",\"data\":[\(list)]}"
    }

    /// vLLM-shaped exposition (v1 names, two label sets for the running requests).
    static func metrics(full: Bool, running: Int? = nil, cache: String? = nil) -> String {
        """
        # HELP vllm:num_requests_running Number of requests in model execution batches.
        # TYPE vllm:num_requests_running gauge
        vllm:num_requests_running{engine="0",model_name="m"} \(running ?? (full ? 200 : 3)).0
        vllm:num_requests_running{engine="1",model_name="m"} \(full ? 56 : 2).0
        # HELP vllm:num_requests_waiting Number of requests waiting to be processed.
        # TYPE vllm:num_requests_waiting gauge
        vllm:num_requests_waiting{engine="0",model_name="m"} \(full ? 40 : 0).0
        # HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
        # TYPE vllm:kv_cache_usage_perc gauge
        vllm:kv_cache_usage_perc{engine="0",model_name="m"} \(cache ?? (full ? "0.99" : "0.12"))

        """
    }
}

/// Lets the channel handlers find the fleet created after the server is bound.
final class TableBox: Sendable {
    let fleet = Mutex<FakeEdgeFleet?>(nil)
}

final class FakeEdgeHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let fleet: TableBox
    private var path = ""
    private var method = "GET"
    private var keepAlive = true

    init(fleet: TableBox) { self.fleet = fleet }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.drop { $0 == "/" })
            method = head.method.rawValue
            keepAlive = head.isKeepAlive
        case .body:
            break
        case .end:
            guard let fleet = fleet.fleet.withLock({ $0 }), let answer = fleet.answer(path: path, method: method) else {
                context.close(promise: nil)
                return
            }
            let keepAlive = self.keepAlive
            let respond = { [self] in
                var headers = HTTPHeaders()
                headers.add(
                    name: "Content-Type",
                    value: path.hasSuffix("metrics")
                        ? "text/plain; version=0.0.4" : path.hasSuffix("models") ? "application/json" : "text/plain")
                headers.add(name: "Content-Length", value: String(answer.body.utf8.count))
                if !keepAlive { headers.add(name: "Connection", value: "close") }
                let head = HTTPResponseHead(
                    version: .http1_1, status: HTTPResponseStatus(statusCode: answer.status), headers: headers)
                context.write(wrapOutboundOut(.head(head)), promise: nil)
                context.write(
                    wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: answer.body)))),
                    promise: nil)
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                    if !keepAlive { channel.close(promise: nil) }
                }
            }
            if answer.delay > 0 {
                context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(answer.delay * 1e9))) {
                    respond()
                }
            } else {
                respond()
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
