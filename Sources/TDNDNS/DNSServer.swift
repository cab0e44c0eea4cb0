import NIOCore
import NIOPosix

/// Settings of the UDP and TCP listeners.
public struct ServerSettings: Sendable {
    public var listen: [ListenAddress]
    public var threads: Int
    public var maxUDPPayload = 1232
    public var tcp = TCPServer.Settings()
    /// Where query counts go (nil: not counted).
    public var stats: QueryStats?

    public init(listen: [ListenAddress], threads: Int) {
        self.listen = listen
        self.threads = threads
    }
}

/// UDP and TCP listeners on the same addresses and ports, answering from one snapshot store.
public final class DNSServer: Sendable {
    public let store: SnapshotStore
    /// The addresses with the ports actually bound (port 0 in the settings picks a free one,
    /// the same for UDP and TCP).
    public let addresses: [ListenAddress]
    private let udp: UDPServer
    private let tcp: TCPServer
    private let group: MultiThreadedEventLoopGroup

    private init(
        store: SnapshotStore, addresses: [ListenAddress], udp: UDPServer, tcp: TCPServer,
        group: MultiThreadedEventLoopGroup
    ) {
        self.store = store
        self.addresses = addresses
        self.udp = udp
        self.tcp = tcp
        self.group = group
    }

    /// Binds every listener and starts answering.
    public static func start(settings: ServerSettings, store: SnapshotStore) async throws -> DNSServer {
        let threads = settings.threads > 0 ? settings.threads : System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, min(threads, 4)))
        var tcpSettings = settings.tcp
        tcpSettings.maxUDPPayload = settings.maxUDPPayload
        tcpSettings.stats = settings.stats
        // With port 0 the UDP bind picks the port and TCP must get the same one; a port taken
        // for TCP only, or taken by someone else between the pick and the bind of the UDP
        // sockets, is retried a few times with a new pick.
        var lastError: Error? = nil
        let picksPort = settings.listen.contains { $0.port == 0 }
        for _ in 0..<8 {
            do {
                let udp = try UDPServer(
                    addresses: settings.listen, threads: threads, store: store, maxUDPPayload: settings.maxUDPPayload,
                    stats: settings.stats)
                do {
                    let tcp = try await TCPServer.start(
                        addresses: udp.boundAddresses, group: group, store: store, settings: tcpSettings)
                    udp.start()
                    return DNSServer(store: store, addresses: udp.boundAddresses, udp: udp, tcp: tcp, group: group)
                } catch {
                    udp.stop()
                    lastError = error
                    if !picksPort { break }
                }
            } catch {
                lastError = error
                if !picksPort { break }
            }
        }
        try? await group.shutdownGracefully()
        throw lastError ?? SocketError("bind", settings.listen[0])
    }

    public func stop() async {
        await tcp.stop()
        udp.stop()
        try? await group.shutdownGracefully()
    }
}
