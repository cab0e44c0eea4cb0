import TDNDNS
import TDNTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("TCP (RFC 7766)")
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
            if chunk > 0 { usleep(200) }
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
        let server = try await TestServer.start(zones: Fixtures.zones, threads: 1, configure: { $0.tcp.idleTimeout = .milliseconds(300) })
        defer { Task { await server.stop() } }
        var client = server.client
        client.timeoutMilliseconds = 3000
        let fd = try client.openTCP()
        defer { close(fd) }
        var byte: UInt8 = 0
        let start = Clock.monotonic
        #expect(recv(fd, &byte, 1, 0) == 0, "the server closes an idle connection")
        #expect(Clock.monotonic - start < 2.5)
    }

    @Test func connectionLimit() async throws {
        let server = try await TestServer.start(zones: Fixtures.zones, threads: 1, configure: { $0.tcp.maxConnections = 2 })
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

enum Clock {
    static var monotonic: Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
