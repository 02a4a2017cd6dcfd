package app

// Exit codes, Firecracker's FcExitCode values.
const (
	ExitOK               = 0
	ExitGenericError     = 1
	ExitUnexpectedError  = 2
	ExitBadSyscall       = 148
	ExitSIGBUS           = 149
	ExitSIGSEGV          = 150
	ExitSIGXFSZ          = 151
	ExitBadConfiguration = 152
	ExitArgParsing       = 153
	ExitSIGXCPU          = 154
	ExitSIGPIPE          = 155
	ExitSIGHUP           = 156
	ExitSIGILL           = 157
)
