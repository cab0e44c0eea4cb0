import Foundation
import TDNDNS
import TDNTestSupport
import Testing

@Suite("Reload")
struct ReloadTests {
    static func zone(serial: Int, address: String) -> String {
        ZoneFixture.apex(serial: serial) + "www IN A \(address)"
    }

    func www(_ server: TestServer) throws -> [String] {
        try server.client.query(Message.query(Fixtures.name("www.r.example."), .a)).answers.map(\.rdataText)
    }

    @Test func goodFileIsSwappedIn() async throws {
        let server = try await TestServer.start(
            zones: ["r.example.zone": Self.zone(serial: 1, address: "192.0.2.1")], threads: 1)
        defer { Task { await server.stop() } }
        #expect(try www(server) == ["192.0.2.1"])
        #expect(server.reloader.reloadIfChanged() == .unchanged)
        server.write("r.example.zone", Self.zone(serial: 2, address: "192.0.2.2"))
        #expect(server.reloader.reload() == .reloaded(zones: 1))
        #expect(try www(server) == ["192.0.2.2"])
        #expect(server.snapshot.zones[0].serial == 2)
    }

    @Test func brokenFileKeepsTheOldDataServing() async throws {
        let server = try await TestServer.start(
            zones: ["r.example.zone": Self.zone(serial: 1, address: "192.0.2.1")], threads: 1)
        defer { Task { await server.stop() } }
        let before = server.snapshot
        server.write("r.example.zone", Self.zone(serial: 2, address: "192.0.2.999"))
        guard case .failed(let errors) = server.reloader.reload() else {
            Issue.record("a broken zone reloaded")
            return
        }
        #expect(errors.count == 1)
        #expect(
            errors[0].hasSuffix("r.example.zone:5: syntax error, could not parse the RR's rdata: www IN A 192.0.2.999"))
        #expect(server.snapshot === before)
        #expect(try www(server) == ["192.0.2.1"])
        // A failed file is not retried until it changes again; then the fix is picked up.
        #expect(server.reloader.reloadIfChanged() == .unchanged)
        try await Task.sleep(for: .milliseconds(10))
        server.write("r.example.zone", Self.zone(serial: 3, address: "192.0.2.3"))
        #expect(server.reloader.reloadIfChanged() == .reloaded(zones: 1))
        #expect(try www(server) == ["192.0.2.3"])
    }

    @Test func changedIncludeIsNoticed() async throws {
        let zone = Self.zone(serial: 1, address: "192.0.2.1") + "\n$INCLUDE r.inc\n"
        let server = try await TestServer.start(
            zones: ["r.example.zone": zone, "r.inc": "extra IN A 192.0.2.10\n"], threads: 1)
        defer { Task { await server.stop() } }
        try await Task.sleep(for: .milliseconds(10))
        server.write("r.inc", "extra IN A 192.0.2.11\n")
        // The include's change is seen; without a new serial the watcher holds it back...
        guard case .failed(let errors) = server.reloader.reloadIfChanged() else {
            Issue.record("a changed include without a new serial was published by the watcher")
            return
        }
        #expect(errors.first?.contains("serial 1 did not increase") == true, "\(errors)")
        // ...and an operator's reload takes it.
        #expect(server.reloader.reload() == .reloaded(zones: 1))
        let answer = try server.client.query(Message.query(Fixtures.name("extra.r.example."), .a))
        #expect(answer.answers.map(\.rdataText) == ["192.0.2.11"])
    }

    final class Clock: @unchecked Sendable {
        var now = 100.0
    }

    /// Issue 12: a change is loaded only once the files have been stable for the settle time.
    @Test func watcherWaitsForTheFilesToSettle() async throws {
        let clock = Clock()
        let server = try await TestServer.start(
            zones: ["r.example.zone": Self.zone(serial: 1, address: "192.0.2.1")], threads: 1, settle: 2,
            clock: { clock.now })
        defer { Task { await server.stop() } }
        // A writer still at work: the file changes between every two checks.
        for step in 0..<5 {
            try await Task.sleep(for: .milliseconds(10))
            server.write(
                "r.example.zone", Self.zone(serial: 2, address: "192.0.2.1") + String(repeating: "\n", count: step))
            #expect(server.reloader.reloadIfChanged() == .settling)
            clock.now += 1
            #expect(try www(server) == ["192.0.2.1"])
        }
        // Unchanged, but not yet for 2 s; then loaded.
        #expect(server.reloader.reloadIfChanged() == .settling)
        clock.now += 1
        #expect(server.reloader.reloadIfChanged() == .reloaded(zones: 1))
        #expect(server.snapshot.zones[0].serial == 2)
        #expect(server.reloader.reloadIfChanged() == .unchanged)
    }

    /// Issue 12: content changed with the serial unchanged (or lower) is refused by the watcher,
    /// kept out until the file changes again, and loaded by a forced reload.
    @Test func watcherRefusesAChangeWithoutANewSerial() async throws {
        let server = try await TestServer.start(
            zones: ["r.example.zone": Self.zone(serial: 5, address: "192.0.2.1")], threads: 1)
        defer { Task { await server.stop() } }
        let before = server.snapshot
        for serial in [5, 4, 5 &+ 0x8000_0000] {
            try await Task.sleep(for: .milliseconds(10))
            server.write("r.example.zone", Self.zone(serial: serial, address: "192.0.2.9"))
            guard case .failed(let errors) = server.reloader.reloadIfChanged() else {
                Issue.record("serial \(serial): published")
                continue
            }
            #expect(
                errors == [
                    "\(server.directory)/r.example.zone: zone r.example. changed but its serial \(UInt32(truncatingIfNeeded: serial)) did not increase (was 5); still serving the previous data: raise the serial, or send SIGHUP to load it as it is"
                ])
            #expect(server.snapshot === before)
            #expect(server.reloader.reloadIfChanged() == .unchanged, "not retried until the file changes")
        }
        // The same content with only whitespace changed is no content change: loaded.
        try await Task.sleep(for: .milliseconds(10))
        server.write("r.example.zone", Self.zone(serial: 5, address: "192.0.2.1") + "\n\n")
        #expect(server.reloader.reloadIfChanged() == .reloaded(zones: 1))
        // Serial arithmetic wraps (RFC 1982): 5 → 2147483652 → 4294967295 → 3 are increases.
        for (serial, address) in [(2_147_483_652, "192.0.2.6"), (4_294_967_295, "192.0.2.7")] {
            try await Task.sleep(for: .milliseconds(10))
            server.write("r.example.zone", Self.zone(serial: serial, address: address))
            #expect(server.reloader.reloadIfChanged() == .reloaded(zones: 1), "serial \(serial)")
        }
        try await Task.sleep(for: .milliseconds(10))
        server.write("r.example.zone", Self.zone(serial: 3, address: "192.0.2.8"))
        #expect(server.reloader.reloadIfChanged() == .reloaded(zones: 1))
        #expect(try www(server) == ["192.0.2.8"])
    }

    @Test func addedAndRemovedZones() async throws {
        let server = try await TestServer.start(
            zones: ["r.example.zone": Self.zone(serial: 1, address: "192.0.2.1")], threads: 1)
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
