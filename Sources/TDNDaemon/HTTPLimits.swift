import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import ServiceLifecycle
import TDNDNS

#if canImport(Glibc)
import Glibc
#endif

/// What an HTTP server of tdnd (status, ledger) allows a client, so that slow or abandoned
/// clients cannot hold the descriptors that DNS over TCP and the probes share with it.
struct HTTPLimits: Sendable {
    /// Connections open at once; further ones wait in the kernel's accept queue (no
    /// descriptor of ours) until one closes.
    var maxConnections = 512
    /// From connecting (or the end of the previous response) to a complete request head. It
    /// is also the keep-alive idle time.
    var headTimeout: TimeAmount = .seconds(10)
    /// From the request head to the end of its body.
    var bodyTimeout: TimeAmount = .seconds(30)
}

/// Closes a connection whose request head does not arrive within `headTimeout`, or whose body
/// does not end within `bodyTimeout` of its head: a slowloris client, which keeps a
/// connection alive a byte at a time, is cut off however it paces its bytes.
final class RequestDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let limits: HTTPLimits
    private var timer: Scheduled<Void>?
    /// Requests read whose responses have not been written completely yet.
    private var unanswered = 0
    private var inBody = false

    init(limits: HTTPLimits) { self.limits = limits }

    func handlerAdded(context: ChannelHandlerContext) { arm(context, limits.headTimeout) }

    func handlerRemoved(context: ChannelHandlerContext) { disarm() }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            inBody = true
            arm(context, limits.bodyTimeout)
        case .body:
            break
        case .end:
            inBody = false
            unanswered += 1
            // Processing time is the handler's business; no deadline while it answers.
            disarm()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            unanswered = max(0, unanswered - 1)
            if unanswered == 0 && !inBody { arm(context, limits.headTimeout) }
        }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext, _ delay: TimeAmount) {
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: delay) { channel.close(promise: nil) }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }
}

/// A Hummingbird server on `address` that logs "WHAT on HOST:PORT" once listening (with the
/// port bound, for port 0); its own per-request logs only from notice up. `limits` caps its
/// connections and times out slow request heads and bodies.
func httpService(
    _ router: Router<BasicRequestContext>, address: ListenAddress, serverName: String, what: String, limits: HTTPLimits,
    logger: Logger
) -> some Service {
    var quiet = logger
    quiet.logLevel = max(logger.logLevel, .notice)
    return Application(
        router: router,
        server: .http1(
            configuration: .init(additionalChannelHandlers: [RequestDeadlineHandler(limits: limits)], idleTimeout: nil)),
        configuration: .init(
            address: .hostname(address.host, port: address.port), serverName: serverName,
            availableConnectionsDelegate: MaximumAvailableConnections(limits.maxConnections, logger: quiet)),
        onServerRunning: { channel in
            logger.info(
                "\(what) on \(ListenAddress(host: address.host, port: channel.localAddress?.port ?? address.port))")
        },
        logger: quiet)
}

/// Raises the soft descriptor limit to the hard one, and says when even that leaves too little
/// room for what the configuration may open at once.
func ensureDescriptors(needed: Int, what: String, logger: Logger) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    if Int(limit.rlim_cur) < needed {
        logger.warning(
            "\(what) may need \(needed) file descriptors but the limit is \(limit.rlim_cur): raise it (LimitNOFILE=, ulimit -n) or lower the connection caps"
        )
    }
}
