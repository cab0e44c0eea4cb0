/// The first four lines of the tests' zones: `$TTL`, the apex SOA and NS, and the name
/// server's address (each line ends in a newline, so the next line written is line 5).
public enum ZoneFixture {
    public static func apex(ttl: Int = 60, serial: Int = 1) -> String {
        """
        $TTL \(ttl)
        @ IN SOA ns1 hostmaster \(serial) 7200 900 1209600 60
          IN NS ns1
        ns1 IN A 192.0.2.53

        """
    }
}
