import TDNDaemon

await TDNCommand.runMain()
