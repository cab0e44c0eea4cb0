import TDNDNS
import TDNTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("TCP (RFC 7766)", .timing)
struct TCPTests {
    static let names = ["example.test.", "www.example.test.", "nothere.example.test.", "mail.example.test."]

    func queries() -> [Message] {
        Self.names.enumerated().map { Message.query(Fixtures.name($0.element), .a, id: UInt16(100 + $0.offset)) }
    }

    func check(_ answers: [[UInt8]], _ queries: [Message]) throws {
        #expect(answers.count == queries.count)
        for (answer, query) in zip(answers, queries) {
            let message = try Message(decoding: answer)
            #expect(message.header.id == query.header.id, "answers come back in order")
            #expect(message.questions == query.questions)
        }
    }

    @Test func pipelinedQueriesInOneWrite() async throws {
        let server = try await SharedServer.shared.get()
        let queries = queries()
        try check(try server.client.tcp(queries.map { $0.encoded() }), queries)
    }

    /// The same stream fed whole, byte by byte and in uneven chunks gives the same answers.
    @Test(arguments: [0, 1, 3, 7, 50])
    func framingIndependentOfSegmentation(chunk: Int) async throws {
        let server = try await SharedServer.shared.get()
        let queries = queries()
        var stream: [UInt8] = []
        for query in queries {
            let bytes = query.encoded()
            stream += [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes
        }
        let client = server.client
        let fd = try client.openTCP()
        defer { close(fd) }
        var position = 0
        while position < stream.count {
            let end = chunk == 0 ? stream.count : min(stream.count, position + chunk)
            try client.sendAll(fd, Array(stream[position..<end]))
            position = end
            if chunk > 0 { try await Task.sleep(for: .microseconds(200)) }
        }
        try check(try client.readFrames(fd, count: queries.count), queries)
    }

    @Test func stalledClientDoesNotBlockOthers() async throws {
        let server = try await SharedServer.shared.get()
        let client = server.client
        // Half a length prefix, then half a message: the server must keep serving others.
        let stalled = try client.openTCP()
        defer { close(stalled) }
        try client.sendAll(stalled, [0])
        let stalled2 = try client.openTCP()
        defer { close(stalled2) }
        try client.sendAll(stalled2, [0, 40, 1, 2, 3])
        let queries = queries()
        try check(try client.tcp(queries.map { $0.encoded() }), queries)
        let udp = try client.query(Message.query(Fixtures.name("example.test."), .soa))
        #expect(udp.answers.count == 1)
    }

    @Test func idleConnectionsAreClosed() async throws {
        let server = try await TestServer.start(
            zones: Fixtures.zones, threads: 1, configure: { $0.tcp.idleTimeout = .milliseconds(300) })
        defer { Task { await server.stop() } }
        var client = server.client
        client.timeoutMilliseconds = 3000
        let fd = try client.openTCP()
        defer { close(fd) }
        var byte: UInt8 = 0
        let start = monotonicSeconds()
        #expect(recv(fd, &byte, 1, 0) == 0, "the server closes an idle connection")
        #expect(monotonicSeconds() - start < 2.5)
    }

    @Test func connectionLimit() async throws {
        let server = try await TestServer.start(
            zones: Fixtures.zones, threads: 1, configure: { $0.tcp.maxConnections = 2 })
        defer { Task { await server.stop() } }
        let client = server.client
        let first = try client.openTCP()
        defer { close(first) }
        let second = try client.openTCP()
        defer { close(second) }
        let query = Message.query(Fixtures.name("example.test."), .soa).encoded()
        let framed = [UInt8(query.count >> 8), UInt8(query.count & 0xFF)] + query
        // Make sure both are accepted before the third arrives.
        try client.sendAll(first, framed)
        _ = try client.readFrames(first, count: 1)
        try client.sendAll(second, framed)
        _ = try client.readFrames(second, count: 1)
        let third = try client.openTCP()
        defer { close(third) }
        #expect(throws: DNSClient.Failure.self, "a connection over the limit is closed") {
            try client.sendAll(third, framed)
            _ = try client.readFrames(third, count: 1)
        }
        try client.sendAll(first, framed)
        #expect(try client.readFrames(first, count: 1).count == 1, "connections within the limit keep working")
    }
}

extension TCPTests {
    /// Issue 12: about 25 bytes/s per connection held every TCP slot, since the idle timer
    /// restarts on any byte. A message must now arrive whole within `messageTimeout` of its
    /// first byte, and one client may hold only `maxPerClient` connections: a legitimate
    /// client from another address is served while an attacker trickles bytes.
    @Test func slowlorisIsCutOffAndOneClientCannotTakeEverySlot() async throws {
        let server = try await TestServer.start(
            zones: Fixtures.zones, threads: 1,
            configure: {
                $0.tcp.messageTimeout = .seconds(1)
                $0.tcp.maxPerClient = 4
                $0.tcp.maxConnections = 8
                $0.tcp.idleTimeout = .seconds(10)
            })
        defer { Task { await server.stop() } }
        let query = Message.query(Fixtures.name("www.example.test."), .a).encoded()
        let framed = [UInt8(query.count >> 8), UInt8(query.count & 0xFF)] + query
        let attackers = (0..<6).compactMap { _ in RawTCP(port: server.port) }
        #expect(attackers.count == 6)
        let start = monotonicSeconds()
        var closedAt: [Int: Double] = [:]
        var position = 0
        var legitimateServed = false
        var legitimateGot = ""
        while monotonicSeconds() - start < 3, closedAt.count < attackers.count {
            for (index, connection) in attackers.enumerated() where closedAt[index] == nil {
                let sent = connection.send([framed[position % framed.count]])
                let closed = sent ? (await connection.receive(timeout: 0.005)).closed : true
                if closed {
                    closedAt[index] = monotonicSeconds() - start
                }
            }
            if position == 3 {
                // Meanwhile a client from another address is answered at once.
                let legitimate = try #require(RawTCP(port: server.port, source: "127.0.0.2"))
                legitimate.send(framed)
                let asked = monotonicSeconds()
                let (bytes, closed) = await legitimate.receive(timeout: 1, limit: 2 + 12)
                legitimateServed = bytes.count >= 14 && bytes[2] == framed[2] && bytes[3] == framed[3]
                legitimateGot = "\(bytes.count) bytes in \(monotonicSeconds() - asked) s, closed: \(closed)"
            }
            position += 1
            try await Task.sleep(for: .milliseconds(150))
        }
        #expect(
            legitimateServed, "a client from 127.0.0.2 was not served while 127.0.0.1 trickled bytes: \(legitimateGot)")
        #expect(closedAt.count == 6, "\(closedAt)")
        // Two over the per-client limit are closed at once; the other four within the message
        // deadline of their first byte, although each sent a byte every 150 ms.
        let times = closedAt.values.sorted()
        #expect(times.count == 6 && times[1] < 0.5, "\(times)")
        #expect(times.count == 6 && times[2] > 0.8 && times[5] < 1.8, "\(times)")
        // A whole query sent slowly but within the deadline is answered: four pieces, 100 ms
        // apart (well inside the 1 s deadline even on a loaded machine).
        let patient = try #require(RawTCP(port: server.port))
        let piece = (framed.count + 3) / 4
        for start in stride(from: 0, to: framed.count, by: piece) {
            patient.send(Array(framed[start..<min(start + piece, framed.count)]))
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect((await patient.receive(timeout: 1, limit: 14)).bytes.count >= 14)
    }
}
