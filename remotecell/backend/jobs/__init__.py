"""The control plane's job machinery below the controller: admission, event log, runner sessions."""
