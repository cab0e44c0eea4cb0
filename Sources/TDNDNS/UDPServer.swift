import Atomics
import CSocketIO

#if canImport(Glibc)
import Glibc
#endif

/// A system call that failed while setting up a listener.
public struct SocketError: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ what: String, _ address: ListenAddress) {
        description = "\(address): \(what): \(String(cString: strerror(errno)))"
    }
}

/// The UDP front end: for every address, one SO_REUSEPORT socket per thread, each read by its
/// own thread with recvmmsg and answered with sendmmsg in batches. The kernel spreads datagrams
/// over the sockets, so threads share nothing but the snapshot store.
public final class UDPServer: @unchecked Sendable {
    public private(set) var boundAddresses: [ListenAddress] = []
    private var workers: [UDPWorker] = []
    private var threads: [pthread_t] = []
    private let running = ManagedAtomic<Bool>(true)

    /// Binds the sockets. Port 0 picks a free port once; every address asking for port 0 and
    /// every thread then uses that same port.
    public init(
        addresses: [ListenAddress], threads: Int, store: SnapshotStore, maxUDPPayload: Int, stats: QueryStats? = nil
    ) throws {
        var picked: Int? = nil
        for requested in addresses {
            var address = requested
            if address.port == 0, let picked { address.port = picked }
            for _ in 0..<max(1, threads) {
                let fd: Int32
                do { fd = try Self.bind(&address) } catch {
                    for worker in workers { close(worker.fd) }
                    throw error
                }
                workers.append(
                    UDPWorker(fd: fd, store: store, running: running, maxUDPPayload: maxUDPPayload, stats: stats))
            }
            if requested.port == 0 { picked = address.port }
            boundAddresses.append(address)
        }
    }

    static func bind(_ address: inout ListenAddress) throws -> Int32 {
        // bind() to port 0 on a socket that already has SO_REUSEPORT may return a port another
        // SO_REUSEPORT socket of the same user holds (Linux counts them as compatible), and the
        // two would then share datagrams. A plain socket picks a port nobody holds.
        if address.port == 0 { address.port = try pickFreePort(address) }
        guard var storage = address.socketAddress() else { throw SocketError("bad address", address) }
        let fd = socket(
            address.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError("socket", address) }
        guard tdn_configure_udp_socket(fd, address.isIPv6 ? 1 : 0, 250) == 0 else {
            close(fd)
            throw SocketError("setsockopt", address)
        }
        let length = socklen_t(address.isIPv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        let result = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) }
        }
        guard result == 0 else {
            close(fd)
            throw SocketError("bind", address)
        }
        return fd
    }

    /// A UDP port free on `address`, found with a throwaway socket without SO_REUSEPORT.
    static func pickFreePort(_ address: ListenAddress) throws -> Int {
        guard var storage = address.socketAddress() else { throw SocketError("bad address", address) }
        let fd = socket(
            address.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError("socket", address) }
        defer { close(fd) }
        let length = socklen_t(address.isIPv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        let result = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) }
        }
        guard result == 0 else { throw SocketError("bind", address) }
        var bound = sockaddr_storage()
        var boundLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &boundLength) }
        }
        return withUnsafeBytes(of: bound) { raw in Int(UInt16(raw[2]) << 8 | UInt16(raw[3])) }
    }

    /// Starts one thread per socket.
    public func start() {
        for worker in workers {
            var thread = pthread_t()
            let context = Unmanaged.passRetained(worker).toOpaque()
            pthread_create(&thread, nil, udpWorkerMain, context)
            threads.append(thread)
        }
    }

    /// Stops the threads (each notices within its 250 ms receive timeout) and closes the sockets.
    public func stop() {
        running.store(false, ordering: .relaxed)
        for thread in threads { pthread_join(thread, nil) }
        threads.removeAll()
        for worker in workers { close(worker.fd) }
        workers.removeAll()
    }
}

private func udpWorkerMain(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let worker = Unmanaged<UDPWorker>.fromOpaque(context!).takeRetainedValue()
    worker.run()
    return nil
}

final class UDPWorker: @unchecked Sendable {
    static let batch = 32
    static let receiveSize = 4096

    let fd: Int32
    let store: SnapshotStore
    let running: ManagedAtomic<Bool>
    let responder: Responder
    let slots: UnsafeMutablePointer<tdn_datagram>
    let memory: UnsafeMutableRawPointer
    /// Steered queries of a batch, located together (`Responder.locate`).
    let lookups: UnsafeMutablePointer<DeferredQuery>
    let locations: UnsafeMutablePointer<SteeringLocation>
    let deferredSlots: UnsafeMutablePointer<Int>
    let replySize: Int

    init(fd: Int32, store: SnapshotStore, running: ManagedAtomic<Bool>, maxUDPPayload: Int, stats: QueryStats?) {
        self.fd = fd
        self.store = store
        self.running = running
        responder = Responder(maxUDPPayload: maxUDPPayload, transport: .udp, stats: stats)
        replySize = responder.maxUDPPayload
        slots = .allocate(capacity: Self.batch)
        lookups = .allocate(capacity: Self.batch)
        lookups.initialize(repeating: DeferredQuery(), count: Self.batch)
        locations = .allocate(capacity: Self.batch)
        locations.initialize(repeating: SteeringLocation(), count: Self.batch)
        deferredSlots = .allocate(capacity: Self.batch)
        deferredSlots.initialize(repeating: 0, count: Self.batch)
        memory = .allocate(byteCount: Self.batch * (Self.receiveSize + replySize), alignment: 64)
        for index in 0..<Self.batch {
            var slot = tdn_datagram()
            slot.buffer = memory + index * (Self.receiveSize + replySize)
            slot.capacity = Self.receiveSize
            slot.reply = slot.buffer + Self.receiveSize
            (slots + index).initialize(to: slot)
        }
    }

    deinit {
        lookups.deallocate()
        locations.deallocate()
        deferredSlots.deallocate()
        slots.deallocate()
        memory.deallocate()
    }

    func run() {
        while running.load(ordering: .relaxed) {
            let received = Int(tdn_recv_batch(fd, slots, UInt32(Self.batch)))
            responder.flushStatistics()
            if received <= 0 { continue }  // timeout (EAGAIN) or EINTR: check `running` again
            // One snapshot load per batch: a reload is seen by the next batch.
            let snapshot = store.load()
            var deferred = 0
            for index in 0..<received {
                let slot = slots + index
                let length = slot.pointee.length
                if length == 0 {
                    slot.pointee.reply_length = 0
                    continue
                }
                let written = responder.respond(
                    to: UnsafeRawBufferPointer(start: slot.pointee.buffer, count: length),
                    into: UnsafeMutableRawBufferPointer(start: slot.pointee.reply, count: replySize),
                    transport: .udp, snapshot: snapshot, peer: UnsafeRawPointer(slot.pointer(to: \.peer)!),
                    deferred: lookups + deferred)
                if written == Responder.deferredResult {
                    deferredSlots[deferred] = index
                    deferred += 1
                    continue
                }
                slot.pointee.reply_length = written
            }
            if deferred > 0 {
                // Steered queries: all their lookups at once, then their answers.
                Responder.locate(lookups, count: deferred, snapshot: snapshot, into: locations)
                for item in 0..<deferred {
                    let slot = slots + deferredSlots[item]
                    slot.pointee.reply_length = responder.respond(
                        deferred: lookups[item], location: locations[item],
                        query: UnsafeRawBufferPointer(start: slot.pointee.buffer, count: slot.pointee.length),
                        into: UnsafeMutableRawBufferPointer(start: slot.pointee.reply, count: replySize),
                        transport: .udp, snapshot: snapshot)
                }
            }
            tdn_send_batch(fd, slots, UInt32(received))
        }
        responder.flushStatistics(force: true)
    }
}
