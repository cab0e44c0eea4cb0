import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix

/// Everything probed for one site, every `interval` seconds.
public struct ProbeTarget: Hashable, Sendable {
    public struct HTTPCheck: Hashable, Sendable {
        public var url: String
        public var expect: [Int]
        /// A substring the body must contain.
        public var body: String?
        public init(url: String, expect: [Int] = [200], body: String? = nil) {
            self.url = url
            self.expect = expect
            self.body = body
        }
    }

    public var site: String
    public var http: HTTPCheck?
    /// `host:port` (IPv6 as `[::1]:8000`).
    public var tcp: String?
    public var metrics: String?
    public var capacity: CapacityModel
    public var models: String?
    public var interval: Double
    public var timeout: Double
    public var jitter: Double
    public var rules: HealthRules

    public init(
        site: String, http: HTTPCheck? = nil, tcp: String? = nil, metrics: String? = nil,
        capacity: CapacityModel = .vLLM,
        models: String? = nil, interval: Double = 5, timeout: Double = 2, jitter: Double? = nil,
        rules: HealthRules = HealthRules()
    ) {
        self.site = site
        self.http = http
        self.tcp = tcp
        self.metrics = metrics
        self.capacity = capacity
        self.models = models
        self.interval = interval
        self.timeout = timeout
        self.jitter = jitter ?? interval / 10
        self.rules = rules
        self.rules.measuresCapacity = metrics != nil
    }
}

/// The outcome of probing a site once.
public struct ProbeResult: Sendable {
    /// Whether the site is alive: its health checks (HTTP, TCP) passed; without any, whether
    /// its metrics or models answered.
    public var healthy: Bool
    /// What the health checks saw, for `/status` and the log.
    public var detail: String
    /// Round-trip time of the health check (seconds), or of the first request made.
    public var rtt: Double?
    /// The load, when `/metrics` was scraped successfully.
    public var capacity: CapacityModel.Reading?
    /// The models listed, when `/v1/models` answered.
    public var models: Set<String>?
    /// Per kind (http, tcp, metrics, models): success and round-trip time, for metrics.
    public var checks: [(kind: String, ok: Bool, seconds: Double)] = []

    public init(healthy: Bool, detail: String) {
        self.healthy = healthy
        self.detail = detail
    }
}

/// Runs probes: HTTP(S) through one shared AsyncHTTPClient (pooled keep-alive connections per
/// host), TCP connects through NIO.
public final class Prober: Sendable {
    public let client: HTTPClient
    private let group: any EventLoopGroup
    /// The largest body read from an edge, per kind: a busy engine's `/metrics` page is a few
    /// hundred KB, a model list a few KB. Larger is a failed probe; with `probe-concurrency`
    /// probes in flight, these bound the memory probes can take.
    static let maxHealthBody = 64 << 10
    static let maxMetricsBody = 2 << 20
    static let maxModelsBody = 1 << 20
    /// Model lists longer than this, or ids longer than `maxModelID` bytes, are a failed probe.
    static let maxModels = 1_000
    static let maxModelID = 256

    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, connectionsPerHost: Int = 4) {
        self.group = group
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.connectionPool = .init(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: connectionsPerHost)
        configuration.decompression = .disabled
        client = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: configuration)
    }

    public func shutdown() async {
        try? await client.shutdown()
    }

    /// Probes one site: all its checks at once, each bounded by the target's timeout.
    public func probe(_ target: ProbeTarget) async -> ProbeResult {
        let timeout = TimeAmount.nanoseconds(Int64(target.timeout * 1e9))
        async let http = optionalGet(target.http?.url, timeout: timeout, limit: Self.maxHealthBody)
        async let tcp = optionalConnect(target.tcp, timeout: timeout)
        async let metrics = optionalGet(target.metrics, timeout: timeout, limit: Self.maxMetricsBody)
        async let models = optionalGet(target.models, timeout: timeout, limit: Self.maxModelsBody)
        let (httpOutcome, tcpOutcome, metricsOutcome, modelsOutcome) = await (http, tcp, metrics, models)

        var result = ProbeResult(healthy: true, detail: "")
        var details: [String] = []
        var timedOut = false
        if let check = target.http, let outcome = httpOutcome {
            var ok = false
            switch outcome.result {
            case .success(let response):
                if !check.expect.contains(response.status) {
                    details.append("HTTP \(response.status) from \(check.url)")
                } else if let body = check.body, !String(decoding: response.body, as: UTF8.self).contains(body) {
                    details.append("HTTP \(response.status) without '\(body)' from \(check.url)")
                } else {
                    ok = true
                    details.append("HTTP \(response.status)")
                }
            case .failure(let error):
                if case .timedOut = error { timedOut = true }
                details.append("\(check.url): \(error)")
            }
            result.healthy = result.healthy && ok
            result.rtt = outcome.seconds
            result.checks.append(("http", ok, outcome.seconds))
        }
        if let address = target.tcp, let outcome = tcpOutcome {
            let ok: Bool
            switch outcome.result {
            case .success:
                ok = true
                details.append("TCP \(address) connected")
            case .failure(let error):
                ok = false
                if case .timedOut = error { timedOut = true }
                details.append("TCP \(address): \(error)")
            }
            result.healthy = result.healthy && ok
            result.rtt = result.rtt ?? outcome.seconds
            result.checks.append(("tcp", ok, outcome.seconds))
        }
        var metricsAnswered = false
        if let url = target.metrics, let outcome = metricsOutcome {
            var ok = false
            switch outcome.result {
            case .success(let response) where response.status == 200:
                do {
                    let samples = try ExpositionParser.parse(String(decoding: response.body, as: UTF8.self))
                    result.capacity = try target.capacity.load(from: samples)
                    ok = true
                } catch {
                    // A scrape that does not give a trustworthy figure is a failed scrape: the
                    // site keeps counting as full, never as idle.
                    details.append("\(url): \(error)")
                }
            case .success(let response):
                details.append("\(url): HTTP \(response.status)")
            case .failure(let error):
                details.append("\(url): \(error)")
            }
            metricsAnswered = ok
            result.rtt = result.rtt ?? outcome.seconds
            result.checks.append(("metrics", ok, outcome.seconds))
        }
        if let url = target.models, let outcome = modelsOutcome {
            var ok = false
            switch outcome.result {
            case .success(let response) where response.status == 200:
                switch Self.modelList(response.body) {
                case .success(let list):
                    result.models = list
                    ok = true
                case .failure(let problem):
                    details.append("\(url): \(problem)")
                }
            case .success(let response):
                details.append("\(url): HTTP \(response.status)")
            case .failure(let error):
                details.append("\(url): \(error)")
            }
            result.rtt = result.rtt ?? outcome.seconds
            result.checks.append(("models", ok, outcome.seconds))
        }
        if target.http == nil && target.tcp == nil {
            // No health check: the site is alive when its engine answers at all.
            result.healthy = result.capacity != nil || result.models != nil
        } else if !result.healthy && timedOut && metricsAnswered {
            // A busy engine that is slow to answer its health check is full, not dead.
            result.healthy = true
            result.capacity = CapacityModel.Reading(load: 1, parts: result.capacity?.parts ?? [])
            details.append("health check timed out but /metrics answered: counted as full")
        }
        result.detail = details.joined(separator: "; ")
        return result
    }

    /// `{"data": [{"id": "llama-13b", …}, …]}` → the ids; at most `maxModels` of them, each a
    /// non-empty string of at most `maxModelID` bytes.
    static func modelList(_ body: [UInt8]) -> Result<Set<String>, Failure> {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
            let data = object["data"] as? [[String: Any]]
        else { return .failure(.failed("not an OpenAI model list")) }
        guard data.count <= maxModels else {
            return .failure(.failed("model list of \(data.count) entries (at most \(maxModels))"))
        }
        var ids = Set<String>()
        for entry in data {
            guard let id = entry["id"] as? String, !id.isEmpty, id.utf8.count <= maxModelID else {
                return .failure(.failed("a model id is missing, empty or longer than \(maxModelID) bytes"))
            }
            ids.insert(id)
        }
        return .success(ids)
    }

    public enum Failure: Error, CustomStringConvertible, Sendable {
        case timedOut
        case failed(String)
        public var description: String {
            switch self {
            case .timedOut: return "timed out"
            case .failed(let text): return text
            }
        }
    }

    struct Response: Sendable {
        var status: Int
        var body: [UInt8]
    }

    struct Outcome<Value: Sendable>: Sendable {
        var result: Result<Value, Failure>
        var seconds: Double
    }

    private func optionalGet(_ url: String?, timeout: TimeAmount, limit: Int) async -> Outcome<Response>? {
        guard let url else { return nil }
        return await get(url, timeout: timeout, limit: limit)
    }

    private func optionalConnect(_ address: String?, timeout: TimeAmount) async -> Outcome<Void>? {
        guard let address else { return nil }
        return await connect(address, timeout: timeout)
    }

    /// Seconds since `start`.
    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let duration = ContinuousClock.now - start
        return Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
    }

    func get(_ url: String, timeout: TimeAmount, limit: Int = maxMetricsBody) async -> Outcome<Response> {
        let start = ContinuousClock.now
        func elapsed() -> Double { Self.seconds(since: start) }
        do {
            var request = HTTPClientRequest(url: url)
            request.headers.add(name: "User-Agent", value: "tdnd-probe")
            let response = try await client.execute(request, timeout: timeout)
            let body: ByteBuffer
            do { body = try await response.body.collect(upTo: limit) } catch is NIOTooManyBytesError {
                return Outcome(result: .failure(.failed("body larger than \(limit >> 10) KB")), seconds: elapsed())
            }
            return Outcome(
                result: .success(Response(status: Int(response.status.code), body: Array(body.readableBytesView))),
                seconds: elapsed())
        } catch let error as HTTPClientError
            where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout
        {
            return Outcome(result: .failure(.timedOut), seconds: elapsed())
        } catch {
            return Outcome(result: .failure(.failed(Self.describe(error))), seconds: elapsed())
        }
    }

    func connect(_ address: String, timeout: TimeAmount) async -> Outcome<Void> {
        let start = ContinuousClock.now
        func elapsed() -> Double { Self.seconds(since: start) }
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            return Outcome(result: .failure(.failed("not HOST:PORT")), seconds: 0)
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        do {
            let channel = try await ClientBootstrap(group: group).connectTimeout(timeout).connect(
                host: host, port: port
            ).get()
            try? await channel.close()
            return Outcome(result: .success(()), seconds: elapsed())
        } catch let error as ChannelError where error == .connectTimeout(timeout) {
            return Outcome(result: .failure(.timedOut), seconds: elapsed())
        } catch {
            return Outcome(result: .failure(.failed(Self.describe(error))), seconds: elapsed())
        }
    }

    static func describe(_ error: Error) -> String {
        if let error = error as? NIOConnectionError, let first = error.connectionErrors.first {
            return "connect: \(first.error)"
        }
        return "\(error)"
    }
}
