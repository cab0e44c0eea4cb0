import Foundation
import TDNDNS
import TDNTestSupport
import Testing

/// Debian's dig and kdig against the live server; output compared with the golden files in
/// Resources/dig (TDN_UPDATE_GOLDEN=1 rewrites them; review the diff before committing).
@Suite("dig and kdig")
struct DigTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var file: String
        var tool: String
        var arguments: [String]
        var testDescription: String { file }
    }

    static let cases: [Case] = [
        Case(file: "soa", tool: "dig", arguments: ["example.test.", "SOA"]),
        Case(file: "cname-chain", tool: "dig", arguments: ["chain1.example.test.", "A"]),
        Case(file: "nxdomain", tool: "dig", arguments: ["nothere.example.test.", "A"]),
        Case(file: "nodata", tool: "dig", arguments: ["example.test.", "AAAA"]),
        Case(file: "referral", tool: "dig", arguments: ["host.sub.example.test.", "A"]),
        Case(file: "wildcard", tool: "dig", arguments: ["foo.wild.example.test.", "TXT"]),
        Case(file: "mx-additional", tool: "dig", arguments: ["example.test.", "MX"]),
        Case(file: "ecs-echo", tool: "dig", arguments: ["+subnet=198.51.100.0/24", "www.example.test.", "A"]),
        Case(file: "no-edns-truncated", tool: "dig", arguments: ["+noedns", "+ignore", "medium.example.test.", "TXT"]),
        Case(file: "badvers", tool: "dig", arguments: ["+edns=1", "+noednsnegotiation", "example.test.", "SOA"]),
        Case(file: "notify-notimp", tool: "dig", arguments: ["+opcode=notify", "example.test.", "SOA"]),
        Case(file: "refused", tool: "dig", arguments: ["example.com.", "A"]),
        Case(file: "any", tool: "dig", arguments: ["example.test.", "ANY"]),
        Case(file: "kdig-tcp-big", tool: "kdig", arguments: ["+tcp", "big.example.test.", "TXT"]),
        Case(file: "kdig-unknown-type", tool: "kdig", arguments: ["unknown.example.test.", "TYPE65534"]),
    ]

    static var directory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Resources/dig").path
    }

    /// Drops what changes from run to run: IDs, ports, timings, sizes, the tool's banner.
    static func normalise(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).compactMap { line -> String? in
            if line.hasPrefix(";; Query time") || line.hasPrefix(";; SERVER") || line.hasPrefix(";; WHEN")
                || line.hasPrefix(";; MSG SIZE")
                || line.hasPrefix(";; Received") || line.hasPrefix(";; Time") || line.hasPrefix(";; From")
                || line.hasPrefix("; <<>>")
                || line.hasPrefix(";; global options")
            {
                return nil
            }
            return String(line).replacing(/id: \d+/, with: "id: ID").replacing(/COOKIE: [0-9a-f]+/, with: "COOKIE: C")
        }.joined(separator: "\n")
    }

    @Test(arguments: cases)
    func matchesGolden(_ item: Case) async throws {
        let server = try await SharedServer.shared.get()
        let binary = item.tool == "dig" ? "/usr/bin/dig" : "/usr/bin/kdig"
        let common =
            item.tool == "dig" ? ["+norec", "+nocookie", "+time=2", "+tries=1"] : ["+norec", "+time=2", "+retry=0"]
        let result = try await run(binary, ["-p", String(server.port), "@127.0.0.1"] + common + item.arguments)
        let output = Self.normalise(result.output)
        let path = Self.directory + "/" + item.file + ".expected"
        if ProcessInfo.processInfo.environment["TDN_UPDATE_GOLDEN"] == "1" {
            try output.write(toFile: path, atomically: true, encoding: .utf8)
        }
        let expected = try String(contentsOfFile: path, encoding: .utf8)
        #expect(
            output == expected,
            "\(item.tool) \(item.arguments.joined(separator: " ")) differs from \(item.file).expected")
    }
}
