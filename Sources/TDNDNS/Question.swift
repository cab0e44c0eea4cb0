/// An entry of the question section (RFC 1035 §4.1.2).
package struct Question: Hashable, Sendable {
    public var name: DomainName
    public var type: RecordType
    public var recordClass: UInt16

    public init(name: DomainName, type: RecordType, recordClass: UInt16 = 1) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
    }
}
