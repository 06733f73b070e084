// Runs statements through the PostgreSQL JDBC driver (the driver Spark reads the Redshift stand-in with) and prints,
// for each, "ok <rows>" or "error <SQLSTATE> <message>". Arguments: the JDBC URL, user, password, then statements;
// a statement prefixed with "5x " runs five times as one PreparedStatement (the driver then prepares it on the server).
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import org.postgresql.util.PSQLException;

public class RulesProbe {
    public static void main(String[] args) throws Exception {
        try (Connection connection = DriverManager.getConnection(args[0], args[1], args[2])) {
            connection.setAutoCommit(false);
            for (int i = 3; i < args.length; i++) {
                String sql = args[i];
                int times = 1;
                if (sql.startsWith("5x ")) {
                    times = 5;
                    sql = sql.substring(3);
                }
                try (PreparedStatement statement = connection.prepareStatement(sql)) {
                    for (int n = 0; n < times; n++) {
                        System.out.println(run(statement));
                    }
                } catch (PSQLException error) {
                    System.out.println("error " + error.getSQLState() + " " + error.getServerErrorMessage().getMessage());
                    connection.rollback();
                }
            }
        }
    }

    private static String run(PreparedStatement statement) throws SQLException {
        if (!statement.execute()) {
            return "ok";
        }
        int rows = 0;
        try (ResultSet result = statement.getResultSet()) {
            while (result.next()) {
                rows++;
            }
        }
        return "ok " + rows;
    }
}
