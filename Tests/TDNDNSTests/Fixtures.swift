import Foundation
import TDNDNS
import TDNTestSupport

/// The zone most tests answer from: one of each feature of part 3 of the DNS core issue.
enum Fixtures {
    static let longText = String(repeating: "x", count: 200)

    static var exampleZone: String {
        var text = ##"""
            $ORIGIN example.test.
            $TTL 300
            @        3600 IN SOA ns1 hostmaster ( 7 7200 900 1209600
                                                  60 ) ; negative TTL 60
                     3600 IN NS  ns1
                     3600 IN NS  ns2.example.test.
            @             IN A   192.0.2.1
                          IN MX  10 mail
            ns1           IN A   192.0.2.53
            ns2           IN AAAA 2001:db8::53
            mail          IN A   192.0.2.25
                          IN AAAA 2001:db8::25
            www           IN CNAME @
            chain1        IN CNAME chain2
            chain2        IN CNAME www
            loop1         IN CNAME loop2
            loop2         IN CNAME loop1
            dangling      IN CNAME nothere
            external      IN CNAME target.example.net.
            to-wild       IN CNAME foo.wild
            *.wild        IN A   192.0.2.80
                          IN TXT "wildcard"
            a.b.c         IN A   192.0.2.3
            sub           IN NS  ns.sub
                          IN NS  ns.elsewhere.net.
            ns.sub        IN A   192.0.2.54
            _sip._tcp     IN SRV 0 5 5060 mail
            MixedCase     IN A   192.0.2.9
            svc           IN HTTPS 1 mail alpn=h2
            unknown       IN TYPE65534 \# 3 010203
            semicolon     IN TXT "a;b" "quote\"d"
            $INCLUDE example.test.inc
            """##
        text += "\nmedium IN TXT " + Array(repeating: "\"\(longText)\"", count: 3).joined(separator: " ")
        for index in 0..<8 { text += "\nbig IN TXT \"\(index) \(longText)\"" }
        return text + "\n"
    }

    static let exampleInclude = """
        ; included with the origin of the including file
        included  IN A 192.0.2.77
        """

    static var zones: [String: String] {
        ["example.test.zone": exampleZone, "example.test.inc": exampleInclude]
    }

    static func name(_ text: String) -> DomainName { try! DomainName(text) }
}

extension ResourceRecord {
    /// `owner TTL TYPE rdata`, for comparing sections.
    var line: String { "\(name) \(ttl) \(type) \(rdataText)" }
}
