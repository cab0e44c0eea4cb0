import Foundation
import TDNDNS
import TDNTestSupport
import Testing

@Suite("Reload")
struct ReloadTests {
    static func zone(serial: Int, address: String) -> String {
        """
        $TTL 60
        @ IN SOA ns1 hostmaster \(serial) 7200 900 1209600 60
          IN NS ns1
        ns1 IN A 192.0.2.53
        www IN A \(address)
        """
    }

    func www(_ server: TestServer) throws -> [String] {
        try server.client.query(Message.query(Fixtures.name("www.r.example."), .a)).answers.map(\.rdataText)
    }

    @Test func goodFileIsSwappedIn() async throws {
        let server = try await TestServer.start(zones: ["r.example.zone": Self.zone(serial: 1, address: "192.0.2.1")], threads: 1)
        defer { Task { await server.stop() } }
        #expect(try www(server) == ["192.0.2.1"])
        #expect(server.reloader.reloadIfChanged() == .unchanged)
        server.write("r.example.zone", Self.zone(serial: 2, address: "192.0.2.2"))
        #expect(server.reloader.reload() == .reloaded(zones: 1))
        #expect(try www(server) == ["192.0.2.2"])
        #expect(server.snapshot.zones[0].serial == 2)
    }

    @Test func brokenFileKeepsTheOldDataServing() async throws {
        let server = try await TestServer.start(zones: ["r.example.zone": Self.zone(serial: 1, address: "192.0.2.1")], threads: 1)
        defer { Task { await server.stop() } }
        let before = server.snapshot
        server.write("r.example.zone", Self.zone(serial: 2, address: "192.0.2.999"))
        guard case .failed(let errors) = server.reloader.reload() else {
            Issue.record("a broken zone reloaded")
            return
        }
        #expect(errors.count == 1)
        #expect(errors[0].hasSuffix("r.example.zone:5: syntax error, could not parse the RR's rdata: www IN A 192.0.2.999"))
        #expect(server.snapshot === before)
        #expect(try www(server) == ["192.0.2.1"])
        // A failed file is not retried until it changes again; then the fix is picked up.
        #expect(server.reloader.reloadIfChanged() == .unchanged)
        usleep(10_000)
        server.write("r.example.zone", Self.zone(serial: 3, address: "192.0.2.3"))
        #expect(server.reloader.reloadIfChanged() == .reloaded(zones: 1))
        #expect(try www(server) == ["192.0.2.3"])
    }

    @Test func changedIncludeIsNoticed() async throws {
        let zone = Self.zone(serial: 1, address: "192.0.2.1") + "\n$INCLUDE r.inc\n"
        let server = try await TestServer.start(zones: ["r.example.zone": zone, "r.inc": "extra IN A 192.0.2.10\n"], threads: 1)
        defer { Task { await server.stop() } }
        usleep(10_000)
        server.write("r.inc", "extra IN A 192.0.2.11\n")
        #expect(server.reloader.reloadIfChanged() == .reloaded(zones: 1))
        let answer = try server.client.query(Message.query(Fixtures.name("extra.r.example."), .a))
        #expect(answer.answers.map(\.rdataText) == ["192.0.2.11"])
    }

    @Test func addedAndRemovedZones() async throws {
        let server = try await TestServer.start(zones: ["r.example.zone": Self.zone(serial: 1, address: "192.0.2.1")], threads: 1)
        defer { Task { await server.stop() } }
        server.write("s.example.zone", Self.zone(serial: 1, address: "192.0.2.5"))
        #expect(server.reloader.reloadIfChanged() == .reloaded(zones: 2))
        let s = try server.client.query(Message.query(Fixtures.name("www.s.example."), .a))
        #expect(s.answers.map(\.rdataText) == ["192.0.2.5"])
        unlink(server.directory + "/s.example.zone")
        #expect(server.reloader.reloadIfChanged() == .reloaded(zones: 1))
        let gone = try server.client.query(Message.query(Fixtures.name("www.s.example."), .a))
        #expect(gone.rcode == .refused)
    }
}
