import Atomics
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The TCP front end (RFC 7766): two-octet length framing, pipelined queries answered in
/// order, an idle timeout, a connection limit and write back-pressure, on SwiftNIO event loops.
public final class TCPServer: Sendable {
    public let boundAddresses: [ListenAddress]
    private let channels: [Channel]

    private init(boundAddresses: [ListenAddress], channels: [Channel]) {
        self.boundAddresses = boundAddresses
        self.channels = channels
    }

    public struct Settings: Sendable {
        public var idleTimeout: TimeAmount = .seconds(10)
        /// Once the first byte of a message has arrived, the whole message must arrive within
        /// this: the idle timer restarts on every byte, so alone it cannot stop a client that
        /// trickles bytes (slowloris).
        public var messageTimeout: TimeAmount = .seconds(5)
        public var maxConnections = 1024
        /// Connections one client (an IPv4 address, an IPv6 /64) may hold open, so that one
        /// source cannot take every slot.
        public var maxPerClient = 16
        public var maxUDPPayload = 1232
        public var stats: QueryStats?
        public init() {}
    }

    public static func start(
        addresses: [ListenAddress], group: EventLoopGroup, store: SnapshotStore, settings: Settings
    ) async throws -> TCPServer {
        let open = ManagedAtomic<Int>(0)
        let perClient = ClientConnectionCounts(limit: settings.maxPerClient)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                if open.wrappingIncrementThenLoad(ordering: .relaxed) > settings.maxConnections {
                    open.wrappingDecrement(ordering: .relaxed)
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in open.wrappingDecrement(ordering: .relaxed) }
                let client = channel.remoteAddress.flatMap(ClientConnectionCounts.key)
                if let client {
                    guard perClient.open(client) else { return channel.close() }
                    channel.closeFuture.whenComplete { _ in perClient.close(client) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(readTimeout: settings.idleTimeout),
                        ByteToMessageHandler(LengthPrefixedFrameDecoder(messageTimeout: settings.messageTimeout)),
                        TCPQueryHandler(store: store, maxUDPPayload: settings.maxUDPPayload, stats: settings.stats),
                    ])
                }
            }
        var channels: [Channel] = []
        var bound: [ListenAddress] = []
        do {
            for address in addresses {
                let channel = try await bootstrap.bind(host: address.host, port: address.port).get()
                channels.append(channel)
                bound.append(ListenAddress(host: address.host, port: channel.localAddress?.port ?? address.port))
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        return TCPServer(boundAddresses: bound, channels: channels)
    }

    /// Stops accepting; open connections are closed with the event loops.
    public func stop() async {
        for channel in channels { try? await channel.close() }
    }
}

/// Splits a TCP stream into DNS messages by their two-octet length prefix (RFC 1035 §4.2.2),
/// and closes the connection when a message, once begun, is not complete within
/// `messageTimeout`.
struct LengthPrefixedFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    let messageTimeout: TimeAmount
    /// Armed while part of a message is buffered.
    private var deadline: Scheduled<Void>?

    init(messageTimeout: TimeAmount = .seconds(5)) { self.messageTimeout = messageTimeout }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
            buffer.readableBytes >= 2 + Int(length)
        else {
            if buffer.readableBytes > 0 && deadline == nil {
                let channel = context.channel
                deadline = context.eventLoop.scheduleTask(in: messageTimeout) { channel.close(promise: nil) }
            }
            return .needMoreData
        }
        deadline?.cancel()
        deadline = nil
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(Self.wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }

    mutating func decodeLast(
        context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
    ) throws -> DecodingState {
        deadline?.cancel()
        deadline = nil
        return try decode(context: context, buffer: &buffer)
    }
}

/// Open TCP connections per client, for `maxPerClient`. Touched when a connection opens or
/// closes, never per query.
final class ClientConnectionCounts: Sendable {
    /// An IPv4 client (IPv4-mapped and NAT64 spellings included, as steering locates them), or
    /// the /64 of an IPv6 one.
    struct Key: Hashable {
        var isIPv6: Bool
        var bits: UInt64
    }

    private let counts = Mutex<[Key: Int]>([:])
    private let limit: Int

    init(limit: Int) { self.limit = limit }

    static func key(_ address: SocketAddress) -> Key? {
        var storage = sockaddr_storage()
        let family: Int32
        switch address {
        case .v4(let v4):
            withUnsafeMutableBytes(of: &storage) { raw in withUnsafeBytes(of: v4.address) { raw.copyMemory(from: $0) } }
            family = AF_INET
        case .v6(let v6):
            withUnsafeMutableBytes(of: &storage) { raw in withUnsafeBytes(of: v6.address) { raw.copyMemory(from: $0) } }
            family = AF_INET6
        default:
            return nil
        }
        // The same address bits the query path reads from a peer (`Responder.addressBits`).
        let (high, low) = withUnsafeBytes(of: &storage) { raw in
            let bytes = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            return family == AF_INET ? Responder.addressBits(bytes + 4, 4) : Responder.addressBits(bytes + 8, 16)
        }
        if family == AF_INET { return Key(isIPv6: false, bits: high >> 32) }
        if Responder.embedsIPv4(high, low) { return Key(isIPv6: false, bits: low & 0xFFFF_FFFF) }
        return Key(isIPv6: true, bits: high)
    }

    /// Counts a new connection; false (and not counted) when the client is at its limit.
    func open(_ key: Key) -> Bool {
        counts.withLock { counts in
            let count = counts[key, default: 0]
            guard count < limit else { return false }
            counts[key] = count + 1
            return true
        }
    }

    func close(_ key: Key) {
        counts.withLock { counts in
            let count = counts[key, default: 1] - 1
            counts[key] = count > 0 ? count : nil
        }
    }
}

final class TCPQueryHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let store: SnapshotStore
    private let responder: Responder
    /// The client's address, read once per connection, for steered answers without ECS.
    private var peer = sockaddr_storage()
    private var hasPeer = false

    init(store: SnapshotStore, maxUDPPayload: Int, stats: QueryStats?) {
        self.store = store
        self.responder = Responder(maxUDPPayload: maxUDPPayload, transport: .tcp, stats: stats)
    }

    func channelInactive(context: ChannelHandlerContext) {
        responder.flushStatistics(force: true)
        context.fireChannelInactive()
    }

    func channelActive(context: ChannelHandlerContext) {
        if let remote = context.channel.remoteAddress {
            remote.withSockAddr { address, length in
                withUnsafeMutableBytes(of: &peer) {
                    $0.copyMemory(from: UnsafeRawBufferPointer(start: address, count: min(length, $0.count)))
                }
            }
            hasPeer = true
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let query = Self.unwrapInboundIn(data)
        let snapshot = store.load()
        // Room for the largest template after the largest question, plus OPT with ECS.
        let capacity = min(65535, max(512, 12 + 260 + snapshot.maximumBodyLength + 64))
        var reply = context.channel.allocator.buffer(capacity: capacity + 2)
        reply.writeInteger(UInt16(0))
        let written = withUnsafeBytes(of: &peer) { peerBytes in
            query.withUnsafeReadableBytes { input in
                reply.writeWithUnsafeMutableBytes(minimumWritableBytes: capacity) { output in
                    responder.respond(
                        to: input, into: UnsafeMutableRawBufferPointer(rebasing: output.prefix(capacity)),
                        transport: .tcp,
                        snapshot: snapshot, peer: hasPeer ? peerBytes.baseAddress : nil)
                }
            }
        }
        guard written > 0 else { return }
        reply.setInteger(UInt16(written), at: reply.readerIndex)
        context.write(Self.wrapOutboundOut(reply), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        responder.flushStatistics()
        context.flush()
    }

    /// A client that sends queries but does not read answers is not read from until it does.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        _ = context.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable)
        if context.channel.isWritable { context.read() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
