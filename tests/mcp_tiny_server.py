"""A tiny MCP server over stdio, for tests/test_tools.py (the SDK's FastMCP, named MCPServer in mcp 2)."""

try:
    from mcp.server.mcpserver import MCPServer as Server
except ImportError:
    from mcp.server.fastmcp import FastMCP as Server
server = Server("tiny")

@server.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b

@server.tool()
def fail() -> str:
    """Always fails."""
    raise ValueError("no luck")

if __name__ == "__main__":
    server.run()
