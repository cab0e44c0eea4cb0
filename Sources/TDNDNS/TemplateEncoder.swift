/// Whose name a record's owner field carries.
enum Owner {
    /// The query name as asked: a pointer to offset 12, never relocated.
    case queryName
    case name(DomainName)
}

/// One RRset to place in a section.
struct Placed {
    var owner: Owner
    var rrset: RRset
}

/// What a template answers; `base` is the name the question is encoded as at compile time.
struct TemplateSpec {
    var base: DomainName
    var answer: [Placed] = []
    var authority: [Placed] = []
    var additional: [Placed] = []
    var rcode: ResponseCode = .noError
    var authoritative = true
    var isReferral = false
}

/// Encodes the sections of a `TemplateSpec` with name compression (RFC 1035 §4.1.4), noting
/// every pointer so that the query path can shift it.
struct TemplateEncoder {
    private(set) var body: [UInt8] = []
    private(set) var relocations: [UInt16] = []
    private var dictionary: [[UInt8]: Int] = [:]
    private let bodyOffset: Int

    init(base: DomainName) {
        bodyOffset = 12 + base.wire.count + 4
        register(base.wire, at: 12)
    }

    /// Remembers the suffixes of `wire` that start before `limit` (written at absolute
    /// `offset`) as pointer targets.
    private mutating func register(_ wire: [UInt8], at offset: Int, limit: Int = 256) {
        let lower = DomainName.lowercase(wire)
        var position = 0
        while lower[position] != 0 && position < limit && offset + position < 0x3F00 {  // room for a shift of up to 255
            let suffix = Array(lower[position...])
            if dictionary[suffix] == nil { dictionary[suffix] = offset + position }
            position += 1 + Int(lower[position])
        }
    }

    mutating func writeName(_ name: DomainName, compress: Bool) {
        let wire = name.wire
        let lower = DomainName.lowercase(wire)
        var position = 0
        if compress {
            while lower[position] != 0 {
                if let target = dictionary[Array(lower[position...])] {
                    let start = bodyOffset + body.count
                    body += wire[0..<position]
                    register(wire, at: start, limit: position)
                    relocations.append(UInt16(body.count))
                    body += [UInt8(0xC0 | (target >> 8)), UInt8(target & 0xFF)]
                    return
                }
                position += 1 + Int(lower[position])
            }
        }
        let start = bodyOffset + body.count
        body += wire
        if compress { register(wire, at: start) }
    }

    private mutating func u16(_ value: UInt16) { body += [UInt8(value >> 8), UInt8(value & 0xFF)] }
    private mutating func u32(_ value: UInt32) {
        u16(UInt16(value >> 16))
        u16(UInt16(value & 0xFFFF))
    }

    mutating func write(_ placed: Placed) {
        let rrset = placed.rrset
        for rdata in rrset.rdatas {
            switch placed.owner {
            case .queryName: body += [0xC0, 12]
            case .name(let name): writeName(name, compress: true)
            }
            u16(rrset.type.rawValue)
            u16(1)
            u32(rrset.ttl)
            let lengthAt = body.count
            u16(0)
            writeRDATA(rdata, type: rrset.type)
            let length = body.count - lengthAt - 2
            body[lengthAt] = UInt8(length >> 8)
            body[lengthAt + 1] = UInt8(length & 0xFF)
        }
    }

    /// Names inside RDATA are compressed only for the RFC 1035 types (RFC 3597 §4).
    private mutating func writeRDATA(_ rdata: [UInt8], type: RecordType) {
        var reader = WireReader(rdata)
        do {
            switch type {
            case .ns, .cname, .ptr:
                writeName(try reader.name("rdata"), compress: true)
            case .mx:
                body += try reader.take(2, "rdata")
                writeName(try reader.name("rdata"), compress: true)
            case .soa:
                writeName(try reader.name("rdata"), compress: true)
                writeName(try reader.name("rdata"), compress: true)
                body += try reader.take(20, "rdata")
            default:
                body += rdata
                return
            }
            if reader.remaining != 0 { body += try reader.take(reader.remaining, "rdata") }
        } catch {
            body += rdata
        }
    }
}

extension RRset {
    /// The domain names in the RDATA that additional-section processing follows
    /// (RFC 1034 §3.6.2 for NS and MX, RFC 2782 for SRV, RFC 9460 §4.1 for SVCB and HTTPS,
    /// whose TargetName "." means the owner itself and needs nothing more).
    var additionalTargets: [DomainName] {
        rdatas.compactMap { rdata -> DomainName? in
            var reader = WireReader(rdata)
            switch type {
            case .ns: return try? reader.name("rdata")
            case .mx:
                _ = try? reader.take(2, "rdata")
                return try? reader.name("rdata")
            case .srv:
                _ = try? reader.take(6, "rdata")
                return try? reader.name("rdata")
            case .svcb, .https:
                _ = try? reader.take(2, "rdata")
                let target = try? reader.name("rdata")
                return target == .root ? nil : target
            default: return nil
            }
        }
    }

    /// The single target of a CNAME.
    var cnameTarget: DomainName? {
        guard type == .cname, let rdata = rdatas.first else { return nil }
        return try? DomainName(wire: rdata)
    }
}
